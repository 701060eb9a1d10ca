// The browser peer against the Rust peer's golden vectors (swarm/tests/golden.rs
// writes test/vectors.json): every piece verifies or is refused for the same reason,
// every frame decodes to the same message and encodes back to the same bytes, every
// bad frame is refused.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { peerIdOf } from "../src/peer.js";
import { PieceError, infoHash, parsePiece, verifyPiece, verifyPieceAsync } from "../src/piece.js";
import { FrameDecoder, type Message, WireError, decodeFrame, encode } from "../src/wire.js";

interface Vectors {
  channel: string;
  infoHash: string;
  peerIds: { trackerId: string; peerId: string }[];
  pieces: { name: string; hex: string; verdict: string; fields?: Record<string, unknown> }[];
  frames: { hex: string; message: Record<string, unknown> }[];
  badFrames: { name: string; hex: string }[];
}

const vectors: Vectors = JSON.parse(readFileSync(new URL("../../test/vectors.json", import.meta.url), "utf8"));
const bytes = (hex: string) => Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
const hexOf = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const channel = bytes(vectors.channel);

/** A message in the vectors' terms (64-bit integers as decimal strings). */
function describe(m: Message): Record<string, unknown> {
  const s = (x: bigint) => x.toString();
  switch (m.kind) {
    case "hello":
      return { kind: m.kind, ...m.hello, channel: hexOf(m.hello.channel), peerId: s(m.hello.peerId) };
    case "status": {
      const st = m.status;
      return {
        kind: m.kind,
        ...st,
        segmentStart: st.segmentStart === null ? null : s(st.segmentStart),
        root: st.root.map(s),
        parent: st.parent.map(s),
      };
    }
    case "have_map":
      return { kind: m.kind, base: s(m.base), words: m.words.map(s) };
    case "request":
      return { kind: m.kind, seqs: m.seqs.map(s) };
    case "piece":
      return { kind: m.kind, piece: hexOf(m.piece.wire) };
    case "goodbye":
      return { kind: m.kind, reason: m.reason };
    case "have":
    case "dont_have":
    case "busy":
      return { kind: m.kind, seq: s(m.seq) };
    case "subscribe":
      return { kind: m.kind, substreams: s(m.substreams) };
    case "subscribe_reply":
      return { kind: m.kind, accepted: s(m.accepted) };
    case "ping":
    case "pong":
      return { kind: m.kind, nonce: s(m.nonce) };
  }
}

test("a channel's info-hash is the tracker's", () => {
  assert.equal(hexOf(infoHash(channel)), vectors.infoHash);
  for (const { trackerId, peerId } of vectors.peerIds) assert.equal(peerIdOf(bytes(trackerId)).toString(), peerId);
});

test("pieces verify, or are refused for the reason the Rust peer gives", () => {
  assert.ok(vectors.pieces.length >= 8);
  for (const v of vectors.pieces) {
    let verdict = "ok";
    try {
      const p = parsePiece(bytes(v.hex));
      if (v.fields) {
        const got = { seq: p.seq.toString(), timestampUs: p.timestampUs.toString(), flags: p.flags, payloadLen: p.payload.length };
        assert.deepEqual(got, v.fields, v.name);
      }
      try {
        verifyPiece(p, channel);
      } catch (e) {
        assert.ok(e instanceof PieceError, v.name);
        verdict = e.forged ? "forged" : "wrong_channel";
      }
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
      assert.ok(e instanceof PieceError, `${v.name}: ${e}`);
      verdict = "malformed";
    }
    assert.equal(verdict, v.verdict, v.name);
  }
});

test("WebCrypto's verification gives every piece the same verdict", async () => {
  for (const v of vectors.pieces) {
    if (v.verdict === "malformed") continue;
    let verdict = "ok";
    try {
      await verifyPieceAsync(parsePiece(bytes(v.hex)), channel);
    } catch (e) {
      assert.ok(e instanceof PieceError, v.name);
      verdict = e.forged ? "forged" : "wrong_channel";
    }
    assert.equal(verdict, v.verdict, v.name);
  }
});

test("frames decode to the Rust peer's messages and encode back to the same bytes", () => {
  assert.ok(vectors.frames.length >= 14);
  const kinds = new Set<string>();
  for (const v of vectors.frames) {
    const wire = bytes(v.hex);
    const m = decodeFrame(wire.subarray(4));
    kinds.add(m.kind);
    assert.deepEqual(describe(m), v.message);
    assert.equal(hexOf(encode(m)), v.hex, `${m.kind} re-encoded`);
  }
  assert.equal(kinds.size, 13, "every message kind but the fragment");
});

test("a stream of frames split anywhere decodes to the same messages", () => {
  const stream = Uint8Array.from(vectors.frames.flatMap((v) => Array.from(bytes(v.hex))));
  for (const cut of [1, 3, 7, 100, 1000]) {
    const dec = new FrameDecoder();
    const got: string[] = [];
    for (let at = 0; at < stream.length; at += cut) {
      dec.extend(stream.subarray(at, at + cut));
      for (let m = dec.next(); m !== null; m = dec.next()) got.push(hexOf(encode(m)));
    }
    assert.deepEqual(got, vectors.frames.map((v) => v.hex), `cut every ${cut} bytes`);
  }
});

test("bad frames are refused, as the Rust peer refuses them", () => {
  assert.ok(vectors.badFrames.length >= 10);
  for (const v of vectors.badFrames) {
    const dec = new FrameDecoder();
    dec.extend(bytes(v.hex));
    assert.throws(() => dec.next(), (e) => e instanceof WireError || e instanceof PieceError, v.name);
  }
  // A length of 0 or past the limit is refused before any body comes.
  for (const len of [0, 770_170, 0xffff_ffff]) {
    const dec = new FrameDecoder();
    const head = new Uint8Array(4);
    new DataView(head.buffer).setUint32(0, len);
    dec.extend(head);
    assert.throws(() => dec.next(), WireError, `length ${len}`);
  }
});
