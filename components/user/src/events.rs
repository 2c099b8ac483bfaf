//! `user.created`, published when someone registers (never with the password hash).

use common::{ApiError, events};

use crate::User;

pub fn user_created(user: &User) -> Result<(), ApiError> {
    events::publish("/berth-shop/user", "user.created", user)
}
