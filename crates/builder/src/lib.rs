//! Dockerfile builds: the front half.
//!
//! This crate parses Dockerfiles into typed [`Instruction`]s with exact
//! line/column errors ([`parse`]), expands variables with Docker's rules
//! ([`expand`], [`StageScope`]), plans multi-stage builds ([`plan`]), matches
//! `.dockerignore` patterns ([`DockerIgnore`]) and computes cache keys
//! ([`cache_key`], [`hash_sources`]), and holds the engine-independent half of
//! the executor: the cache store ([`CacheStore`]), COPY/ADD tars ([`copy_tar`])
//! and config updates ([`apply_metadata`]); see `docs/build.md`.

mod cache;
mod error;
mod executor;
mod expand;
mod ignore;
mod parse;
mod plan;
mod scope;
mod store;

pub use cache::{cache_key, hash_sources, SourceHashError};
pub use error::ParseError;
pub use executor::{
    apply_metadata, command_argv, copy_tar, parse_chmod, resolve_path, shell_of, CopyError,
    CopySpec,
};
pub use expand::{expand, ExpandError};
pub use ignore::{clean as clean_path, DockerIgnore, IgnoreError};
pub use parse::{
    parse, parse_duration, parse_named, Command, CopyArgs, CopySource, Dockerfile, Healthcheck,
    Heredoc, Instruction, Mount, Node, Span, DEFAULT_ESCAPE,
};
pub use plan::{plan, Plan, PlanError, Stage, StageRef};
pub use scope::{is_proxy_arg, unused_build_args, GlobalArgs, StageScope, PROXY_ARGS};
pub use store::{cache_size, explain_miss, CacheEntry, CacheInputs, CacheStore, CachedLayer};
