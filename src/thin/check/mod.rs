//! thin_check's engine (filled in below).
