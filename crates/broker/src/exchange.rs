//! Exchanges: trade one credential for another at a cloud's token service.
//!
//! Each exchange is one type in its own module, implementing [`crate::step::Step`] (which says
//! what it takes from the previous step, checked when the config is read), and one line in
//! [`KINDS`].

pub mod aws_sts;
pub mod google_sts;
pub mod iam_credentials;

use crate::step::Kind;

/// Every exchange kind: the name written in `exchange = [{ kind = "…" }]` and its parser.
pub const KINDS: &[Kind] = &[
    Kind::new("aws-sts", aws_sts::AwsSts::parse),
    Kind::new("google-sts", google_sts::GoogleSts::parse),
    Kind::new("impersonate", iam_credentials::Impersonate::parse),
];
