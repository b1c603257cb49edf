//! ting-bench
