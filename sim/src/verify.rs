//! Verification, once per piece per run instead of once per piece per viewer.
//!
//! Every honest copy of a piece in the simulator is the same allocation (pieces are
//! shared, never copied). The source's pieces are checked for real once, before the
//! run; a viewer's check of that very allocation is then answered from the
//! register (read-only, so shards on several threads share it without a lock). Anything else — every forged or tampered piece, which is always a
//! different allocation — goes through the real Ed25519 check. So peers verify
//! exactly as in production; only the repeated arithmetic is skipped.

use swarm::piece::{ChannelId, ChannelVerifier, Piece, PieceError, Verify};

#[derive(Debug)]
pub(crate) struct KnownPieces {
    real: ChannelVerifier,
    /// The source's pieces, by seq.
    genuine: Vec<Piece>,
}

impl KnownPieces {
    /// Checks each of the source's `pieces` (piece `i` has seq `i`) for real.
    pub(crate) fn new(channel: ChannelId, pieces: Vec<Piece>) -> Result<Self, PieceError> {
        let real = ChannelVerifier::new(channel)?;
        // (A piece at another index than its seq is merely checked for real each time.)
        for p in &pieces {
            real.verify(p)?;
        }
        Ok(KnownPieces { real, genuine: pieces })
    }
}

impl Verify for KnownPieces {
    fn channel(&self) -> ChannelId {
        self.real.channel()
    }

    fn verify(&self, piece: &Piece) -> Result<(), PieceError> {
        match self.genuine.get(piece.seq() as usize) {
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
        let p = key.sign_piece(0, 1, PieceFlags::NONE, filler_payload(1, 0)).unwrap();
        let known = KnownPieces::new(key.id(), vec![p.clone()]).unwrap();
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
        assert!(KnownPieces::new(key.id(), vec![forged]).is_err());
    }
}
