// The peer messages and their framing (PROTOCOL.md §2–3), as swarm/src/wire.rs has
// them. Integers are big-endian; 64-bit ones (sequence numbers, peer ids, masks) are
// bigints.

import { type Piece, parsePiece } from "./piece.js";

export const PROTOCOL_VERSION = 2;
export const MAX_FRAME_LEN = 770_169;
export const MAX_SUBSTREAMS = 64;
export const MAX_HAVE_WORDS = 16;
export const MAX_REQUEST_SEQS = 32;
const HELLO_LEN = 49;
const U64_MAX = 0xffff_ffff_ffff_ffffn;

export enum Role {
  Seed = 1,
  Viewer = 2,
}

export enum Goodbye {
  Leaving = 0,
  Full = 1,
  WrongChannel = 2,
  BadVersion = 3,
  Malformed = 4,
  Forged = 5,
  OutOfWindow = 6,
  Idle = 7,
  Replaced = 8,
  Duplicate = 9,
  Flooding = 10,
}

export interface Hello {
  version: number;
  channel: Uint8Array;
  peerId: bigint;
  role: Role;
  reachable: boolean;
  nSubstreams: number;
  uploadKbps: number;
}

export interface Status {
  freeSlots: number;
  children: number;
  minChildKbps: number;
  busyMs: number;
  /** `null`: it holds no segment start. */
  segmentStart: bigint | null;
  depth: number[];
  latencyMs: number[];
  root: bigint[];
  parent: bigint[];
}

export type Message =
  | { kind: "hello"; hello: Hello }
  | { kind: "status"; status: Status }
  | { kind: "have"; seq: bigint }
  | { kind: "have_map"; base: bigint; words: bigint[] }
  | { kind: "subscribe"; substreams: bigint }
  | { kind: "subscribe_reply"; accepted: bigint }
  | { kind: "request"; seqs: bigint[] }
  | { kind: "piece"; piece: Piece }
  | { kind: "dont_have"; seq: bigint }
  | { kind: "ping"; nonce: bigint }
  | { kind: "pong"; nonce: bigint }
  | { kind: "goodbye"; reason: number }
  | { kind: "busy"; seq: bigint };

const KINDS = {
  hello: 0x01,
  status: 0x02,
  have: 0x03,
  have_map: 0x04,
  subscribe: 0x05,
  subscribe_reply: 0x06,
  request: 0x07,
  piece: 0x08,
  dont_have: 0x09,
  ping: 0x0a,
  pong: 0x0b,
  goodbye: 0x0c,
  busy: 0x0e,
} as const;
const NAMES = new Map<number, Message["kind"]>(Object.entries(KINDS).map(([k, v]) => [v, k as Message["kind"]]));

/** A message that could not be decoded: its sender gets `Goodbye(Malformed)`. */
export class WireError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WireError";
  }
}

/** Writes big-endian integers into a growing buffer. */
class Writer {
  private buf: Uint8Array<ArrayBuffer> = new Uint8Array(64);
  private view = new DataView(this.buf.buffer);
  len = 0;

  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const bigger = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    bigger.set(this.buf.subarray(0, this.len));
    this.buf = bigger;
    this.view = new DataView(bigger.buffer);
  }
  u8(x: number): void {
    this.room(1);
    this.view.setUint8(this.len, x);
    this.len += 1;
  }
  u16(x: number): void {
    this.room(2);
    this.view.setUint16(this.len, x);
    this.len += 2;
  }
  u32(x: number): void {
    this.room(4);
    this.view.setUint32(this.len, x);
    this.len += 4;
  }
  u64(x: bigint): void {
    this.room(8);
    this.view.setBigUint64(this.len, x);
    this.len += 8;
  }
  bytes(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  patchU32(at: number, x: number): void {
    this.view.setUint32(at, x);
  }
  done(): Uint8Array<ArrayBuffer> {
    return this.buf.subarray(0, this.len);
  }
}

function count(what: string, n: number, max: number): number {
  if (n > max) throw new WireError(`${what}: ${n}, at most ${max}`);
  return n;
}

/** `msg` as one frame: `length: u32 | kind: u8 | body`. */
export function encode(msg: Message): Uint8Array<ArrayBuffer> {
  const w = new Writer();
  w.u32(0);
  w.u8(KINDS[msg.kind]);
  switch (msg.kind) {
    case "hello": {
      const h = msg.hello;
      if (h.channel.length !== 32) throw new WireError("a channel id is 32 bytes");
      w.u16(h.version);
      w.bytes(h.channel);
      w.u64(h.peerId);
      w.u8(h.role);
      w.u8(h.reachable ? 1 : 0);
      w.u8(h.nSubstreams);
      w.u32(h.uploadKbps);
      break;
    }
    case "status": {
      const s = msg.status;
      const n = count("status depth entries", s.depth.length, MAX_SUBSTREAMS);
      if (s.latencyMs.length !== n || s.root.length !== n || s.parent.length !== n) {
        throw new WireError("status latency, root, parent and depth lengths differ");
      }
      w.u16(s.freeSlots);
      w.u16(s.children);
      w.u32(s.minChildKbps);
      w.u16(s.busyMs);
      w.u64(s.segmentStart ?? U64_MAX);
      w.u8(n);
      s.depth.forEach((d) => w.u8(d));
      s.latencyMs.forEach((l) => w.u16(l));
      s.root.forEach((r) => w.u64(r));
      s.parent.forEach((p) => w.u64(p));
      break;
    }
    case "have_map":
      w.u64(msg.base);
      w.u8(count("have_map words", msg.words.length, MAX_HAVE_WORDS));
      msg.words.forEach((x) => w.u64(x));
      break;
    case "request":
      w.u8(count("request seqs", msg.seqs.length, MAX_REQUEST_SEQS));
      msg.seqs.forEach((x) => w.u64(x));
      break;
    case "piece":
      w.bytes(msg.piece.wire);
      break;
    case "goodbye":
      w.u8(msg.reason);
      break;
    case "have":
    case "dont_have":
    case "busy":
      w.u64(msg.seq);
      break;
    case "subscribe":
      w.u64(msg.substreams);
      break;
    case "subscribe_reply":
      w.u64(msg.accepted);
      break;
    case "ping":
    case "pong":
      w.u64(msg.nonce);
      break;
  }
  w.patchU32(0, w.len - 4);
  return w.done();
}

/** Reads big-endian integers off a frame body; every read checks the length. */
class Reader {
  private at = 0;
  private readonly view: DataView;
  constructor(
    private readonly buf: Uint8Array,
    private readonly kind: string,
  ) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  need(n: number): void {
    if (this.buf.length - this.at < n) throw new WireError(`${this.kind} truncated`);
  }
  u8(): number {
    this.need(1);
    return this.view.getUint8(this.at++);
  }
  u16(): number {
    this.need(2);
    const x = this.view.getUint16(this.at);
    this.at += 2;
    return x;
  }
  u32(): number {
    this.need(4);
    const x = this.view.getUint32(this.at);
    this.at += 4;
    return x;
  }
  u64(): bigint {
    this.need(8);
    const x = this.view.getBigUint64(this.at);
    this.at += 8;
    return x;
  }
  bytes(n: number): Uint8Array {
    this.need(n);
    const b = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    return b;
  }
  rest(): Uint8Array {
    return this.bytes(this.buf.length - this.at);
  }
  count(what: string, max: number): number {
    return count(what, this.u8(), max);
  }
  finish(): void {
    const extra = this.buf.length - this.at;
    if (extra !== 0) throw new WireError(`${this.kind} has ${extra} trailing bytes`);
  }
}

/** Decodes one frame body (`kind | body`, without the length prefix). */
export function decodeFrame(frame: Uint8Array): Message {
  if (frame.length === 0) throw new WireError("empty frame");
  if (frame.length > MAX_FRAME_LEN) throw new WireError(`frame of ${frame.length} bytes, at most ${MAX_FRAME_LEN}`);
  const k = frame[0];
  if (k === 0x0d) throw new WireError("fragment on a message transport");
  const kind = NAMES.get(k);
  if (kind === undefined) throw new WireError(`unknown message kind 0x${k.toString(16)}`);
  const r = new Reader(frame.subarray(1), kind);
  let msg: Message;
  switch (kind) {
    case "hello": {
      r.need(HELLO_LEN);
      const version = r.u16();
      const channel = r.bytes(32).slice();
      const peerId = r.u64();
      const role = r.u8();
      if (role !== Role.Seed && role !== Role.Viewer) throw new WireError(`role ${role} is neither seed nor viewer`);
      const flags = r.u8();
      if (flags & ~1) throw new WireError(`hello flags 0x${flags.toString(16)} contain unknown bits`);
      const nSubstreams = r.u8();
      const uploadKbps = r.u32();
      msg = { kind, hello: { version, channel, peerId, role, reachable: (flags & 1) === 1, nSubstreams, uploadKbps } };
      break;
    }
    case "status": {
      r.need(18);
      const freeSlots = r.u16();
      const children = r.u16();
      const minChildKbps = r.u32();
      const busyMs = r.u16();
      const start = r.u64();
      const n = r.count("status depth entries", MAX_SUBSTREAMS);
      r.need(19 * n);
      const depth = Array.from(r.bytes(n));
      const latencyMs = Array.from({ length: n }, () => r.u16());
      const root = Array.from({ length: n }, () => r.u64());
      const parent = Array.from({ length: n }, () => r.u64());
      const segmentStart = start === U64_MAX ? null : start;
      msg = { kind, status: { freeSlots, children, minChildKbps, busyMs, segmentStart, depth, latencyMs, root, parent } };
      break;
    }
    case "have_map": {
      const base = r.u64();
      const n = r.count("have_map words", MAX_HAVE_WORDS);
      msg = { kind, base, words: Array.from({ length: n }, () => r.u64()) };
      break;
    }
    case "request": {
      const n = r.count("request seqs", MAX_REQUEST_SEQS);
      r.need(8 * n);
      msg = { kind, seqs: Array.from({ length: n }, () => r.u64()) };
      break;
    }
    case "piece":
      msg = { kind, piece: parsePiece(r.rest()) };
      break;
    case "goodbye":
      msg = { kind, reason: r.u8() };
      break;
    case "have":
    case "dont_have":
    case "busy":
      msg = { kind, seq: r.u64() };
      break;
    case "subscribe":
      msg = { kind, substreams: r.u64() };
      break;
    case "subscribe_reply":
      msg = { kind, accepted: r.u64() };
      break;
    case "ping":
    case "pong":
      msg = { kind, nonce: r.u64() };
      break;
  }
  r.finish();
  return msg;
}

/**
 * Frames off a byte stream (stream transports: TCP, a data channel): feed bytes with
 * {@link extend}, take whole messages with {@link next}. A bad length is refused before
 * its body is read. Bytes are kept as the chunks they came in and joined once per
 * frame, so a piece that arrives in 48 chunks of 16 KiB is copied once, not 48 times.
 */
export class FrameDecoder {
  private chunks: Uint8Array[] = [];
  private len = 0;

  extend(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.chunks.push(bytes);
    this.len += bytes.length;
  }

  /** The first `n` bytes (n <= len) as one array: the leading chunks joined if need be. */
  private head(n: number): Uint8Array {
    if (this.chunks[0].length < n) {
      const joined = new Uint8Array(this.len);
      let at = 0;
      for (const c of this.chunks) {
        joined.set(c, at);
        at += c.length;
      }
      this.chunks = [joined];
    }
    return this.chunks[0];
  }

  private consume(n: number): void {
    this.chunks[0] = this.chunks[0].subarray(n);
    if (this.chunks[0].length === 0) this.chunks.shift();
    this.len -= n;
  }

  /** Bytes received and not yet taken as frames. */
  get buffered(): number {
    return this.len;
  }

  /** The next whole message, or `null` until more bytes come. */
  next(): Message | null {
    if (this.len < 4) return null;
    const head = this.head(4);
    const len = new DataView(head.buffer, head.byteOffset, 4).getUint32(0);
    if (len === 0 || len > MAX_FRAME_LEN) throw new WireError(`frame length ${len}, must be 1..=${MAX_FRAME_LEN}`);
    if (this.len < 4 + len) return null;
    const frame = this.head(4 + len).subarray(4, 4 + len);
    this.consume(4 + len);
    return decodeFrame(frame);
  }
}
