//! Dockerfile builds: the front half.
//!
//! This crate parses Dockerfiles into typed [`Instruction`]s with exact
//! line/column errors ([`parse`]), expands variables with Docker's rules
//! ([`expand`], [`StageScope`]), plans multi-stage builds ([`plan`]), matches
//! `.dockerignore` patterns ([`DockerIgnore`]) and computes cache keys
//! ([`cache_key`], [`hash_sources`]). The executor and the cache store are not
//! built yet; see `docs/build.md`.

mod cache;
mod error;
mod expand;
mod ignore;
mod parse;
mod plan;
mod scope;

pub use cache::{cache_key, hash_sources, SourceHashError};
pub use error::ParseError;
pub use expand::{expand, ExpandError};
pub use ignore::{DockerIgnore, IgnoreError};
pub use parse::{
    parse, parse_named, Command, CopyArgs, CopySource, Dockerfile, Healthcheck, Heredoc,
    Instruction, Mount, Node, Span, DEFAULT_ESCAPE,
};
pub use plan::{plan, Plan, PlanError, Stage, StageRef};
pub use scope::{is_proxy_arg, unused_build_args, GlobalArgs, StageScope, PROXY_ARGS};
