pub mod piece;
pub mod wire;
