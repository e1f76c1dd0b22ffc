"""Images: content store, layers, snapshots, image records."""
