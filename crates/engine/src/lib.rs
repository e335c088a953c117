//! Containers as objects.
//!
//! Will own: container records and their lifecycle (create, start, stop, kill, remove, exec, logs, wait, inspect, prune), the monitor process, and the translation of image config plus CLI options into an OCI spec, composing the image store, snapshotter, runtime, volumes and networking crates.
