//! Delivery to BuildButler: the delivery loops and the routing of items.

pub mod deliver;
pub(crate) mod route;
