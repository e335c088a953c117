//! More container operations: rename, top, pause/unpause, stats, cp, and
//! system-wide usage and pruning.
