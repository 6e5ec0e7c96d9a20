//! Exchanges: trade one credential for another at a cloud's token service.
//!
//! Each exchange is one type in its own module, implementing [`crate::step::Step`] (which says
//! what it takes from the previous step, checked when the config is read), and one line in
//! [`KINDS`].

pub mod aws_assume_role;
pub mod aws_sts;
pub mod entra;
pub mod google_sts;
pub mod iam_credentials;
pub mod roles_anywhere;

use crate::step::{Kind, KindError};
use crate::values::{RoleArn, SessionName};

/// Every exchange kind: the name written in `exchange = [{ kind = "…" }]` and its parser.
pub const KINDS: &[Kind] = &[
    Kind::new("aws-assume-role", aws_assume_role::AwsAssumeRole::parse),
    Kind::new("aws-sts", aws_sts::AwsSts::parse),
    Kind::new("entra", entra::Entra::parse),
    Kind::new("google-sts", google_sts::GoogleSts::parse),
    Kind::new("impersonate", iam_credentials::Impersonate::parse),
    Kind::new("roles-anywhere", roles_anywhere::RolesAnywhere::parse),
];

/// The fields the AWS role exchanges read alike: `role_arn`, the optional `session_name`, and
/// `duration_seconds` within STS's 900..=43200. `invalid` builds the error naming a field.
pub(crate) fn role_fields(
    invalid: &dyn Fn(&str, String) -> KindError,
    role_arn: &str,
    session_name: Option<&str>,
    duration_seconds: Option<u32>,
) -> Result<(RoleArn, Option<SessionName>), KindError> {
    let role_arn = RoleArn::parse(role_arn).map_err(|m| invalid("role_arn", m))?;
    let session_name = session_name
        .map(SessionName::parse)
        .transpose()
        .map_err(|m| invalid("session_name", m))?;
    if let Some(d) = duration_seconds
        && !(900..=43200).contains(&d)
    {
        return Err(invalid(
            "duration_seconds",
            format!("{d} is outside 900..=43200"),
        ));
    }
    Ok((role_arn, session_name))
}
