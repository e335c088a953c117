//! OCI content store, image metadata, registry client and archives.
//!
//! Will own: content-addressed blobs under content/blobs/sha256 with verified, resumable ingest; image names, tags and manifests (choosing this host's platform); the distribution API v2 client (anonymous, basic and bearer auth); docker-archive and OCI layout save/load, and rootfs import.
