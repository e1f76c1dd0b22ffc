"""Networks: IPAM, bridges and veths, firewall rules, embedded DNS."""
