//! Local users and groups, read from `/etc/passwd` and `/etc/group`.
//!
//! Caller rules name users and groups (`user = "alice"`, `group = "ci"`); they are resolved to
//! numeric ids once, when the config is loaded, by parsing these two files directly (no NSS, no
//! libc: users only known to LDAP or systemd-homed must be given by `uid`). A group's members are
//! the users whose primary group it is plus the users it lists.

use std::collections::BTreeSet;
use std::path::Path;

/// The system's user database.
pub const PASSWD: &str = "/etc/passwd";
/// The system's group database.
pub const GROUP: &str = "/etc/group";

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Login names listed as members.
    pub members: Vec<String>,
}

/// Users and groups.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    users: Vec<User>,
    groups: Vec<Group>,
}

impl Accounts {
    /// Parses the text of a passwd and a group file; malformed lines and comments are skipped.
    pub fn parse(passwd: &str, group: &str) -> Self {
        let users = passwd
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|line| {
                let mut f = line.split(':');
                let name = f.next()?.trim();
                let _password = f.next()?;
                let uid = f.next()?.trim().parse().ok()?;
                let gid = f.next()?.trim().parse().ok()?;
                (!name.is_empty()).then(|| User {
                    name: name.to_owned(),
                    uid,
                    gid,
                })
            })
            .collect();
        let groups = group
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|line| {
                let mut f = line.split(':');
                let name = f.next()?.trim();
                let _password = f.next()?;
                let gid = f.next()?.trim().parse().ok()?;
                let members = f
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect();
                (!name.is_empty()).then(|| Group {
                    name: name.to_owned(),
                    gid,
                    members,
                })
            })
            .collect();
        Self { users, groups }
    }

    /// Reads two files; a missing or unreadable file counts as empty (names then fail to
    /// resolve, with an error naming the file).
    pub fn read(passwd: &Path, group: &Path) -> Self {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        Self::parse(&read(passwd), &read(group))
    }

    /// [`PASSWD`] and [`GROUP`].
    pub fn system() -> Self {
        Self::read(Path::new(PASSWD), Path::new(GROUP))
    }

    /// A user by login name.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// A group by name.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// The uids of a group's members: users whose primary group it is, and listed users.
    pub fn member_uids(&self, group: &Group) -> BTreeSet<u32> {
        self.users
            .iter()
            .filter(|u| u.gid == group.gid || group.members.contains(&u.name))
            .map(|u| u.uid)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD_TEXT: &str = "root:x:0:0:root:/root:/bin/bash\n\
        # a comment\n\
        alice:x:1000:1000:Alice:/home/alice:/bin/sh\n\
        bob:x:1001:100::/home/bob:/bin/sh\n\
        broken line\n\
        carol:x:1002:1002::/home/carol:/bin/sh\n";
    const GROUP_TEXT: &str = "root:x:0:\nusers:x:100:\nci:x:2000:alice, carol\nalice:x:1000:\n";

    #[test]
    fn resolves_users_groups_and_members() {
        let a = Accounts::parse(PASSWD_TEXT, GROUP_TEXT);
        assert_eq!(a.user("alice").map(|u| (u.uid, u.gid)), Some((1000, 1000)));
        assert!(a.user("broken line").is_none());
        assert!(a.user("nobody").is_none());
        let ci = a.group("ci").unwrap();
        assert_eq!(ci.gid, 2000);
        assert_eq!(a.member_uids(ci), BTreeSet::from([1000, 1002]));
        let users = a.group("users").unwrap();
        assert_eq!(a.member_uids(users), BTreeSet::from([1001]));
    }
}
