// Signed pieces (PROTOCOL.md §1): parse, check, verify. A second implementation of
// swarm/src/piece.rs for the browser peer; test/vectors.json (written by the Rust
// code) keeps the two in step.

import * as ed from "@noble/ed25519";
import { blake3 } from "@noble/hashes/blake3.js";
import { sha512 } from "@noble/hashes/sha2.js";

ed.hashes.sha512 = sha512;

export const HEADER_LEN = 56;
export const SIGNATURE_LEN = 64;
export const TS_PACKET_LEN = 188;
export const MAX_TS_PACKETS = 4096;
export const MAX_PAYLOAD_LEN = TS_PACKET_LEN * MAX_TS_PACKETS;
export const MAX_PIECE_LEN = HEADER_LEN + MAX_PAYLOAD_LEN + SIGNATURE_LEN;
export const PIECE_VERSION = 1;

export const Flags = {
  SEGMENT_START: 1,
  DISCONTINUITY: 2,
  AD_BREAK_START: 4,
  AD_BREAK_END: 8,
} as const;

const SIGNING_CONTEXT = new TextEncoder().encode("shoal/piece/v2");

/** Why a piece was refused; `forged` proves bad intent (the sender is banned). */
export class PieceError extends Error {
  constructor(
    message: string,
    readonly forged = false,
  ) {
    super(message);
    this.name = "PieceError";
  }
}

/** A piece as received: its bytes, and views of its parts (no copies). */
export interface Piece {
  /** The whole piece: header, payload, signature. */
  readonly wire: Uint8Array;
  readonly flags: number;
  readonly seq: bigint;
  readonly timestampUs: bigint;
  readonly channel: Uint8Array;
  readonly payload: Uint8Array;
  readonly signature: Uint8Array;
}

/**
 * Parses `wire` as a piece and checks its form (version, flags, reserved bytes, length,
 * whole TS packets each starting 0x47). It does not verify the signature: see
 * {@link verifyPiece}.
 */
export function parsePiece(wire: Uint8Array): Piece {
  if (wire.length > MAX_PIECE_LEN) throw new PieceError(`piece is ${wire.length} bytes, the limit is ${MAX_PIECE_LEN}`);
  if (wire.length < HEADER_LEN) throw new PieceError(`piece truncated: need ${HEADER_LEN} bytes, have ${wire.length}`);
  const v = new DataView(wire.buffer, wire.byteOffset, wire.byteLength);
  if (wire[0] !== PIECE_VERSION) throw new PieceError(`piece format version ${wire[0]} is not supported`);
  const flags = wire[1];
  if (flags & 0xf0) throw new PieceError(`piece flags 0x${flags.toString(16)} contain unknown bits`);
  if (wire[2] !== 0 || wire[3] !== 0) throw new PieceError("piece header reserved field is not zero");
  const payloadLen = v.getUint32(4);
  if (payloadLen === 0) throw new PieceError("payload is empty");
  if (payloadLen > MAX_PAYLOAD_LEN) throw new PieceError(`piece is too long`);
  if (payloadLen % TS_PACKET_LEN !== 0) {
    throw new PieceError(`payload of ${payloadLen} bytes is not a whole number of 188-byte TS packets`);
  }
  const total = HEADER_LEN + payloadLen + SIGNATURE_LEN;
  if (wire.length !== total) throw new PieceError(`piece is ${wire.length} bytes, its header says ${total}`);
  const payload = wire.subarray(HEADER_LEN, HEADER_LEN + payloadLen);
  for (let i = 0; i < payloadLen; i += TS_PACKET_LEN) {
    if (payload[i] !== 0x47) {
      throw new PieceError(`TS packet ${i / TS_PACKET_LEN} of the payload does not start with sync byte 0x47`);
    }
  }
  return {
    wire,
    flags,
    seq: v.getBigUint64(8),
    timestampUs: v.getBigUint64(16),
    channel: wire.subarray(24, 56),
    payload,
    signature: wire.subarray(HEADER_LEN + payloadLen),
  };
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** What a piece's signature covers: `"shoal/piece/v2" | header | BLAKE3(payload)`, once its header names `channel`. */
function signedMessage(piece: Piece, channel: Uint8Array): Uint8Array<ArrayBuffer> {
  if (!equal(piece.channel, channel)) throw new PieceError("piece belongs to another channel");
  const msg = new Uint8Array(SIGNING_CONTEXT.length + HEADER_LEN + 32);
  msg.set(SIGNING_CONTEXT, 0);
  msg.set(piece.wire.subarray(0, HEADER_LEN), SIGNING_CONTEXT.length);
  msg.set(blake3(piece.payload), SIGNING_CONTEXT.length + HEADER_LEN);
  return msg;
}

/**
 * Verifies `piece` for `channel` (the channel's 32-byte public key): the header names
 * it, and the signature over `"shoal/piece/v2" | header | BLAKE3(payload)` is strict
 * Ed25519 (RFC 8032, canonical encodings; small-order key or R refused, as
 * ed25519-dalek's `verify_strict`). Throws a forged {@link PieceError} if not.
 */
export function verifyPiece(piece: Piece, channel: Uint8Array): void {
  const msg = signedMessage(piece, channel);
  let ok: boolean;
  try {
    const r = ed.Point.fromBytes(piece.signature.subarray(0, 32));
    ok = !r.isSmallOrder() && ed.verify(piece.signature, msg, channel, { zip215: false });
  } catch {
    ok = false;
  }
  if (!ok) throw new PieceError("signature does not verify against the channel key", true);
}

/** A channel key imported into WebCrypto (null: this runtime has no Ed25519 there). */
const webKeys = new Map<string, Promise<CryptoKey | null>>();

function webKey(channel: Uint8Array): Promise<CryptoKey | null> {
  const id = Array.from(channel, (b) => b.toString(16).padStart(2, "0")).join("");
  let key = webKeys.get(id);
  if (!key) {
    const subtle = globalThis.crypto?.subtle;
    key = subtle
      ? subtle.importKey("raw", new Uint8Array(channel), { name: "Ed25519" }, false, ["verify"]).catch(() => null)
      : Promise.resolve(null);
    webKeys.set(id, key);
  }
  return key;
}

/**
 * {@link verifyPiece}, by the runtime's WebCrypto Ed25519 where it has one (native:
 * twenty times faster than pure JS, which matters at 20 pieces a second on a phone),
 * else by the same code as {@link verifyPiece}. Both are RFC 8032 verification with
 * canonical encodings (S < L; R compared as encoded), and cofactorless: for the
 * channel's key, which is a real one, a small-order R cannot verify either way, so
 * both refuse what ed25519-dalek's `verify_strict` refuses (the golden vectors check).
 */
export async function verifyPieceAsync(piece: Piece, channel: Uint8Array): Promise<void> {
  const key = await webKey(channel);
  if (key === null) return verifyPiece(piece, channel);
  const msg = signedMessage(piece, channel);
  let ok: boolean;
  try {
    ok = await globalThis.crypto.subtle.verify({ name: "Ed25519" }, key, new Uint8Array(piece.signature), msg);
  } catch {
    ok = false;
  }
  if (!ok) throw new PieceError("signature does not verify against the channel key", true);
}

/**
 * A channel's 20-byte info-hash, what the tracker takes (PROTOCOL.md §6): the first
 * 20 bytes of BLAKE3 in key-derivation mode over the channel id.
 */
export function infoHash(channel: Uint8Array): Uint8Array {
  const context = new TextEncoder().encode("shoal 2026 channel info-hash v1");
  return blake3(channel, { context }).subarray(0, 20);
}
