//! Pure market domain: fixed-point prices and sizes, sides, books. No I/O.

pub mod book;
pub mod meta;
pub mod price;

pub use book::Book;
pub use meta::MarketMeta;
pub use price::{Price, Side, Size};
