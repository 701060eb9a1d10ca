// A data channel as a stream transport: a large piece crosses in 16 KiB messages and
// comes out whole; small messages share nothing and lose nothing.

import assert from "node:assert/strict";
import { test } from "node:test";

import { HEADER_LEN, SIGNATURE_LEN, parsePiece } from "../src/piece.js";
import { CHUNK, ChannelTransport } from "../src/transport.js";
import { type Message, encode } from "../src/wire.js";

/** An unsigned piece of `packets` TS packets (form only: transports do not verify). */
function bigPiece(packets: number) {
  const len = 188 * packets;
  const wire = new Uint8Array(HEADER_LEN + len + SIGNATURE_LEN);
  const v = new DataView(wire.buffer);
  wire[0] = 1;
  v.setUint32(4, len);
  v.setBigUint64(8, 77n);
  for (let i = 0; i < len; i += 188) {
    wire[HEADER_LEN + i] = 0x47;
    wire[HEADER_LEN + i + 1] = i & 0xff;
  }
  return parsePiece(wire);
}

test("a piece larger than a data-channel message crosses in 16 KiB messages", () => {
  const sent: Uint8Array[] = [];
  const tx = new ChannelTransport({ send: (d) => sent.push(d.slice()), bufferedAmount: 0 });
  const piece = bigPiece(600); // 112,920 bytes
  const msgs: Message[] = [{ kind: "have", seq: 1n }, { kind: "piece", piece }, { kind: "ping", nonce: 9n }];
  msgs.forEach((m) => tx.send(m));
  assert.ok(sent.every((c) => c.length <= CHUNK));
  assert.equal(sent.length, 1 + Math.ceil(encode(msgs[1]).length / CHUNK) + 1);
  const rx = new ChannelTransport({ send: () => {}, bufferedAmount: 0 });
  const got = sent.flatMap((c) => rx.receive(c));
  assert.deepEqual(
    got.map((m) => Array.from(encode(m))),
    msgs.map((m) => Array.from(encode(m))),
  );
  // Also when the network cuts the stream elsewhere.
  const all = Uint8Array.from(sent.flatMap((c) => Array.from(c)));
  const rx2 = new ChannelTransport({ send: () => {}, bufferedAmount: 0 });
  const again: Message[] = [];
  for (let at = 0; at < all.length; at += 1000) again.push(...rx2.receive(all.subarray(at, at + 1000)));
  assert.equal(again.length, 3);
  assert.equal(again[1].kind === "piece" && again[1].piece.payload.length, 188 * 600);
});
