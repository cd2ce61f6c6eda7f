//! Roles in an account and who may change what. Pure rules: the store applies them inside
//! the transaction that changes a membership (with the account locked), so a concurrent
//! change cannot slip between the check and the write (two owners demoting each other cannot
//! leave an account without one).

use std::fmt;

/// A member's role in an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum Role {
    /// Plain member.
    Member,
    /// Manages members (not owners) and the MFA policy.
    Admin,
    /// Everything an admin does, and owners themselves.
    Owner,
}

impl Role {
    /// Storage and wire name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Parse a storage or wire name.
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    /// Whether this role manages the account (members, invitations, policy).
    pub fn manages(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a membership change is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The actor is not an owner or admin of the account.
    NotAdmin,
    /// Making, changing or removing an owner takes an owner.
    OwnerOnly,
    /// The change would leave the account without an owner.
    LastOwner,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAdmin => "only the account's owners and admins can do this",
            Self::OwnerOnly => "only an owner can make, change or remove an owner",
            Self::LastOwner => "an account needs an owner: make someone else an owner first",
        })
    }
}

/// May `actor` manage the account at all (see members, change the policy)?
pub fn may_manage(actor: Option<Role>) -> Result<(), Refusal> {
    if actor.is_some_and(Role::manages) { Ok(()) } else { Err(Refusal::NotAdmin) }
}

/// May `actor` invite someone as `role`? Checked when inviting and again when the invitation
/// is accepted (the inviter may have lost the role since).
pub fn may_invite(actor: Option<Role>, role: Role) -> Result<(), Refusal> {
    may_manage(actor)?;
    if role == Role::Owner && actor != Some(Role::Owner) {
        return Err(Refusal::OwnerOnly);
    }
    Ok(())
}

/// May `actor` change member `target`'s role to `new` (`None`: remove them), the account
/// having `owners` owners now?
pub fn may_change(actor: Option<Role>, target: Role, new: Option<Role>, owners: u32) -> Result<(), Refusal> {
    may_manage(actor)?;
    if (target == Role::Owner || new == Some(Role::Owner)) && actor != Some(Role::Owner) {
        return Err(Refusal::OwnerOnly);
    }
    if target == Role::Owner && new != Some(Role::Owner) && owners <= 1 {
        return Err(Refusal::LastOwner);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Role::*;

    #[test]
    fn names() {
        for r in [Owner, Admin, Member] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn invitations() {
        assert_eq!(may_invite(Some(Owner), Owner), Ok(()));
        assert_eq!(may_invite(Some(Admin), Admin), Ok(()));
        assert_eq!(may_invite(Some(Admin), Owner), Err(Refusal::OwnerOnly));
        assert_eq!(may_invite(Some(Member), Member), Err(Refusal::NotAdmin));
        assert_eq!(may_invite(None, Member), Err(Refusal::NotAdmin), "a former member");
    }

    #[test]
    fn changes() {
        let cases = [
            // (actor, target, new, owners, expected)
            (Some(Owner), Member, Some(Admin), 1, Ok(())),
            (Some(Admin), Member, Some(Admin), 1, Ok(())),
            (Some(Admin), Member, None, 1, Ok(())),
            (Some(Admin), Admin, Some(Member), 1, Ok(())),
            (Some(Member), Member, None, 1, Err(Refusal::NotAdmin)),
            (None, Member, None, 1, Err(Refusal::NotAdmin)),
            (Some(Admin), Member, Some(Owner), 1, Err(Refusal::OwnerOnly)),
            (Some(Admin), Owner, Some(Member), 2, Err(Refusal::OwnerOnly)),
            (Some(Admin), Owner, None, 2, Err(Refusal::OwnerOnly)),
            (Some(Owner), Owner, Some(Admin), 2, Ok(())),
            (Some(Owner), Owner, None, 2, Ok(())),
            (Some(Owner), Owner, Some(Admin), 1, Err(Refusal::LastOwner)),
            (Some(Owner), Owner, None, 1, Err(Refusal::LastOwner)),
            (Some(Owner), Member, Some(Owner), 1, Ok(())),
            (Some(Owner), Owner, Some(Owner), 1, Ok(())),
        ];
        for (actor, target, new, owners, want) in cases {
            assert_eq!(may_change(actor, target, new, owners), want, "{actor:?} {target:?} {new:?} {owners}");
        }
    }
}
