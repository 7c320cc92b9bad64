//! Who a request or socket belongs to: JWTs ([`jwt`]) and argon2id password
//! hashes ([`password`]).

pub mod jwt;
pub mod password;

pub use jwt::{IssuedToken, TokenError, TokenKeys, VerifiedToken};
pub use password::{PasswordError, PasswordHasher};
