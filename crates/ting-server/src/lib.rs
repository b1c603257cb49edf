//! ting-server
