//! Walking btrees (filled in below).
