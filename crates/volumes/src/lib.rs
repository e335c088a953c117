//! Named volumes, bind mounts and tmpfs mounts.
//!
//! Will own: named volume records and data under volumes/<name>/_data, the local driver's options, the -v/--mount/--tmpfs specs turned into OCI mounts, copy-up of image content into new empty volumes, and volume prune.
