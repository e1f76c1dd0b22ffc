FROM debian:bookworm
RUN <<EOF
apt-get update
apt-get install -y curl
EOF
RUN <<-EOT bash
	set -eu
	echo "indented with tabs"
	EOT
RUN python3 <<'PY' > /out.txt
print("$HOME is not expanded")
PY
COPY <<config.ini <<"run.sh" /etc/app/
[app]
name = $NAME
config.ini
#!/bin/sh
exec app "$@"
run.sh
RUN 3<<FD3 cat /dev/fd/3
three
FD3
