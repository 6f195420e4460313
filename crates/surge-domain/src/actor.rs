//! Who is calling: the authenticated principal, already checked by the edge.

use crate::ids::{CourierId, MerchantId, UserId};

/// The caller of a use case. Tokens carry a role and a subject; the server
/// turns a verified token into an `Actor` and domain services decide with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Customer(UserId),
    /// A merchant is its own tenant: it may touch only its own products.
    Merchant(MerchantId),
    /// Operators; the subject is kept for audit logs.
    Admin(String),
    /// Carries parcels; sees and scans only those assigned to it.
    Courier(CourierId),
}

impl Actor {
    pub fn is_admin(&self) -> bool {
        matches!(self, Actor::Admin(_))
    }

    /// May this actor manage (create, change) products of `merchant`?
    pub fn manages(&self, merchant: MerchantId) -> bool {
        match self {
            Actor::Admin(_) => true,
            Actor::Merchant(own) => *own == merchant,
            Actor::Customer(_) | Actor::Courier(_) => false,
        }
    }
}
