//! Dockerfile builds.
//!
//! Will own: parsing Dockerfiles with exact line and column errors, variable expansion, the build planner for multi-stage builds, a per-instruction cache whose key is computed before a step runs, and the executor that runs each step in a temporary container through a trait the engine implements.
