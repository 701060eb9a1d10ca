//! Verification, once per piece per run instead of once per piece per viewer.
//!
//! Every honest copy of a piece in the simulator is the same allocation (pieces are
//! shared, never copied). The source checks each new piece's signature for real and
//! registers it; a viewer's check of that very allocation is then answered from the
//! register. Anything else — every forged or tampered piece, which is always a
//! different allocation — goes through the real Ed25519 check. So peers verify
//! exactly as in production; only the repeated arithmetic is skipped.

use std::sync::RwLock;

use swarm::piece::{ChannelId, ChannelVerifier, Piece, PieceError, Verify};

#[derive(Debug)]
pub(crate) struct KnownPieces {
    real: ChannelVerifier,
    genuine: RwLock<Vec<Piece>>,
}

impl KnownPieces {
    pub(crate) fn new(channel: ChannelId) -> Self {
        let real = ChannelVerifier::new(channel).expect("the simulator's channel key is generated valid");
        KnownPieces { real, genuine: RwLock::new(Vec::new()) }
    }

    /// Verifies `piece` for real and remembers it; pieces arrive in seq order.
    pub(crate) fn register(&self, piece: &Piece) -> Result<(), PieceError> {
        self.real.verify(piece)?;
        let mut genuine = self.genuine.write().unwrap_or_else(|e| e.into_inner());
        if genuine.len() as u64 == piece.seq() {
            genuine.push(piece.clone());
        }
        Ok(())
    }
}

impl Verify for KnownPieces {
    fn channel(&self) -> ChannelId {
        self.real.channel()
    }

    fn verify(&self, piece: &Piece) -> Result<(), PieceError> {
        let genuine = self.genuine.read().unwrap_or_else(|e| e.into_inner());
        match genuine.get(piece.seq() as usize) {
            Some(known) if Piece::ptr_eq(known, piece) => Ok(()),
            _ => self.real.verify(piece),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm::piece::{ChannelKeypair, PieceFlags, filler_payload};

    #[test]
    fn only_the_registered_allocation_skips_the_check() {
        let key = ChannelKeypair::from_secret_bytes(&[2; 32]);
        let known = KnownPieces::new(key.id());
        let p = key.sign_piece(0, 1, PieceFlags::NONE, filler_payload(1, 0)).unwrap();
        known.register(&p).unwrap();
        assert!(known.verify(&p).is_ok());
        // Same header and payload, garbage signature: a different allocation, checked for real.
        let forged = Piece::from_parts(*p.header(), p.payload().clone(), [9; 64]).unwrap();
        assert_eq!(known.verify(&forged), Err(PieceError::BadSignature));
        // A byte-identical copy is also checked for real, and passes.
        let mut wire = Vec::new();
        p.encode(&mut wire);
        let copy = Piece::decode(bytes::Bytes::from(wire)).unwrap();
        assert!(known.verify(&copy).is_ok());
        // A forged piece can't be registered.
        assert!(known.register(&forged).is_err());
    }
}
