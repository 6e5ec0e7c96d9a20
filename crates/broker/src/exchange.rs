//! Exchanges: trade one credential for another at a cloud's token service.

pub mod aws_sts;
pub mod google_sts;
