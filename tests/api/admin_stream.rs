//! admin_stream
