// The page's peer, driven by hand (its time too): it subscribes to a seed, keeps only
// what verifies, bans a forger, forwards its club's substream to a page that
// subscribes, and pulls the rest.

import assert from "node:assert/strict";
import { test } from "node:test";

import * as ed from "@noble/ed25519";
import { blake3 } from "@noble/hashes/blake3.js";

import { PagePeer } from "../src/peer.js";
import { Flags, HEADER_LEN, type Piece, parsePiece } from "../src/piece.js";
import { FrameDecoder, Goodbye, type Message, PROTOCOL_VERSION, Role, type Status, encode } from "../src/wire.js";

const secret = new Uint8Array(32).fill(7);
const channel = ed.getPublicKey(secret);
const N = 4;
const NONE = 0xffff_ffff_ffff_ffffn;

/** A piece as ingest signs it (PROTOCOL.md §1). */
function sign(seq: number, flags = 0, key = secret): Piece {
  const payload = new Uint8Array(188 * 2).fill(seq & 0xff);
  for (let i = 0; i < payload.length; i += 188) payload[i] = 0x47;
  const wire = new Uint8Array(HEADER_LEN + payload.length + 64);
  const v = new DataView(wire.buffer);
  wire[0] = 1;
  wire[1] = flags;
  v.setUint32(4, payload.length);
  v.setBigUint64(8, BigInt(seq));
  v.setBigUint64(16, 1_795_000_000_000_000n + BigInt(seq) * 50_000n);
  wire.set(channel, 24);
  wire.set(payload, HEADER_LEN);
  const context = new TextEncoder().encode("shoal/piece/v2");
  const msg = new Uint8Array([...context, ...wire.subarray(0, HEADER_LEN), ...blake3(payload)]);
  wire.set(ed.sign(msg, key), HEADER_LEN + payload.length);
  return parsePiece(wire);
}

/** One side of an in-memory data channel: what was sent, as messages. */
class Wire {
  sent: Uint8Array[] = [];
  bufferedAmount = 0;
  send(data: Uint8Array): void {
    this.sent.push(data.slice());
  }
  /** The messages sent since the last call. */
  take(): Message[] {
    const d = new FrameDecoder();
    for (const c of this.sent.splice(0)) d.extend(c);
    const out: Message[] = [];
    for (let m = d.next(); m !== null; m = d.next()) out.push(m);
    return out;
  }
}

const seedHello: Message = {
  kind: "hello",
  hello: { version: PROTOCOL_VERSION, channel, peerId: 99n, role: Role.Seed, reachable: true, nSubstreams: N, uploadKbps: 200_000 },
};
const seedStatus: Status = {
  freeSlots: 16,
  children: 0,
  minChildKbps: 0,
  busyMs: 0,
  segmentStart: null,
  depth: [0, 0, 0, 0],
  latencyMs: [65535, 65535, 65535, 65535],
  root: [NONE, NONE, NONE, NONE],
  parent: [NONE, NONE, NONE, NONE],
};

function page(peerId: bigint, log: string[] = [], uploadKbps = 2_000) {
  const got: Piece[] = [];
  const closed: string[] = [];
  const peer = new PagePeer({
    channel,
    peerId,
    nSubstreams: N,
    uploadKbps,
    onPiece: (p) => got.push(p),
    onClose: (link, why) => closed.push(`${link}: ${why}`),
    log: (l) => log.push(l),
  });
  return { peer, got, closed };
}

/** Hands `msgs` to `peer` and waits until the pieces among them are verified. */
const feed = async (peer: PagePeer, link: string, msgs: Message[], now: number) => {
  for (const m of msgs) peer.receive(link, encode(m), now);
  await peer.settled();
};

test("a page subscribes to a seed and keeps what verifies", async () => {
  const { peer, got } = page(5n);
  const seed = new Wire();
  peer.attach({ id: "seed", expectedPeerId: 99n }, seed, 0);
  assert.equal(seed.take()[0].kind, "hello");
  await feed(peer, "seed", [seedHello, { kind: "status", status: seedStatus }], 10);
  const sent = seed.take();
  assert.deepEqual(
    sent.map((m) => m.kind),
    ["status", "subscribe"],
  );
  assert.equal((sent[1] as { substreams: bigint }).substreams, 0b1111n, "every substream from the seed");
  await feed(peer, "seed", [{ kind: "subscribe_reply", accepted: 0b1111n }], 20);
  await feed(
    peer,
    "seed",
    Array.from({ length: 8 }, (_, i) => ({ kind: "piece", piece: sign(1000 + i, i === 0 ? Flags.SEGMENT_START : 0) }) as Message),
    30,
  );
  assert.deepEqual(
    got.map((p) => Number(p.seq)),
    [1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007],
  );
  assert.equal(peer.stats.piecesFromSeeds, 8);
  assert.deepEqual(peer.parents(), ["seed", "seed", "seed", "seed"]);
  // Its Status now says: depth 1 in every substream, fed by the seed, root itself.
  peer.tick(3_100);
  const status = seed.take().find((m) => m.kind === "status");
  assert.ok(status && status.kind === "status");
  assert.deepEqual(status.status.depth, [1, 1, 1, 1]);
  assert.deepEqual(status.status.parent, [99n, 99n, 99n, 99n]);
  assert.deepEqual(status.status.root, [5n, 5n, 5n, 5n]);
  assert.equal(status.status.segmentStart, 1000n);
});

test("the log says where a stall began: a gap in ingest's cuts, or newest pieces arriving late", async () => {
  const log: string[] = [];
  const { peer } = page(5n, log);
  const seed = new Wire();
  peer.attach({ id: "seed", expectedPeerId: 99n }, seed, 0);
  await feed(peer, "seed", [seedHello, { kind: "status", status: seedStatus }, { kind: "subscribe_reply", accepted: 0b1111n }], 1);
  /** Piece `seq` as it reaches us `lagMs` after ingest cut it. */
  const at = (seq: number, lagMs: number) =>
    feed(peer, "seed", [{ kind: "piece", piece: sign(seq) }], 1_795_000_000_000 + seq * 50 + lagMs);
  for (let seq = 1000; seq < 1004; seq++) await at(seq, 100);
  await at(1020, 100); // ingest cut nothing for 850 ms
  await at(1021, 1_500); // a relay upstream held it
  await at(1022, 120);
  await at(1010, 2_000); // a repair of an older piece says nothing of the stream's flow
  assert.deepEqual(
    log.filter((l) => /cut|on time/.test(l)),
    [
      "ingest cut 1020 850 ms after the newest before it",
      "newest piece 1021 came 1399 ms later than usual (1500 ms after its cut)",
      "newest pieces on time again (120 ms after the cut)",
    ],
  );
});

test("a forged piece is never kept, and its sender is told why, dropped and banned", async () => {
  const { peer, got, closed } = page(5n);
  const liar = new Wire();
  peer.attach({ id: "liar", expectedPeerId: null }, liar, 0);
  liar.take();
  const hello = { ...seedHello, hello: { ...seedHello.hello, peerId: 66n, role: Role.Viewer } } as Message;
  await feed(peer, "liar", [hello, { kind: "status", status: seedStatus }, { kind: "subscribe_reply", accepted: 0b1111n }], 1);
  const forged = sign(1000, 0, new Uint8Array(32).fill(8)); // another key, this channel's id
  await feed(peer, "liar", [{ kind: "piece", piece: forged }, { kind: "piece", piece: sign(1001) }], 2);
  assert.equal(got.length, 0, "nothing from a forger, not even what it sent after");
  assert.equal(peer.stats.forgedRefused, 1);
  const bye = liar.take().find((m) => m.kind === "goodbye");
  assert.ok(bye && bye.kind === "goodbye" && bye.reason === Goodbye.Forged);
  assert.match(closed[0], /^liar: signature does not verify/);
  // It comes back on another link under the same id: refused.
  const again = new Wire();
  peer.attach({ id: "again", expectedPeerId: null }, again, 3);
  await feed(peer, "again", [hello], 4);
  const refused = again.take().find((m) => m.kind === "goodbye");
  assert.ok(refused && refused.kind === "goodbye" && refused.reason === Goodbye.Forged);
  assert.equal(peer.stats.bannedAtHello, 1);
  // And its next offers through the tracker are not taken up at all; others' are.
  assert.equal(peer.admits(66n), false);
  assert.equal(peer.admits(67n), true);
  assert.equal(peer.stats.bannedTurnedAway, 1);
});

test("a hello that names another id than the tracker's, or comes after other messages, is refused", async () => {
  const { peer, closed } = page(5n);
  peer.attach({ id: "a", expectedPeerId: 42n }, new Wire(), 0);
  await feed(peer, "a", [seedHello], 1);
  assert.match(closed[0], /tracker identity/);
  peer.attach({ id: "b", expectedPeerId: null }, new Wire(), 0);
  await feed(peer, "b", [{ kind: "ping", nonce: 1n }], 1);
  assert.match(closed[1], /ping before hello/);
  peer.attach({ id: "c", expectedPeerId: null }, new Wire(), 0);
  peer.receive("c", new Uint8Array([0, 0, 0, 1, 0x7f]), 1);
  assert.equal(peer.stats.malformed, 3);
});

test("a page forwards what it is fed to a page that subscribes, which pulls the rest", async () => {
  // A is fed by the seed; B knows only A.
  const a = page(5n);
  const b = page(8n);
  const seed = new Wire();
  a.peer.attach({ id: "seed", expectedPeerId: 99n }, seed, 0);
  await feed(a.peer, "seed", [seedHello, { kind: "status", status: seedStatus }, { kind: "subscribe_reply", accepted: 0b1111n }], 1);
  const aToB = new Wire();
  const bToA = new Wire();
  a.peer.attach({ id: "b", expectedPeerId: null }, aToB, 1);
  b.peer.attach({ id: "a", expectedPeerId: null }, bToA, 1);
  const pump = async (now: number) => {
    for (let i = 0; i < 5; i++) {
      for (const c of aToB.sent.splice(0)) b.peer.receive("a", c, now);
      for (const c of bToA.sent.splice(0)) a.peer.receive("b", c, now);
      await Promise.all([a.peer.settled(), b.peer.settled()]);
    }
  };
  await pump(2);
  // A is fed substreams 0 and 1 once the seed pushed it a piece of each.
  await feed(a.peer, "seed", [{ kind: "piece", piece: sign(1000) }, { kind: "piece", piece: sign(1001) }], 3);
  a.peer.tick(3_000); // A's Status now says depth 1 in substreams 0 and 1
  await pump(3_000);
  // B asked A for everything; A took what it is fed, its club (5 mod 4 = 1) and 0.
  assert.deepEqual(b.peer.parents(), ["a", "a", null, null]);
  for (let i = 2; i <= 8; i++) await feed(a.peer, "seed", [{ kind: "piece", piece: sign(1000 + i) }], 3_010 + i);
  await pump(3_020);
  assert.deepEqual(
    b.got.map((p) => Number(p.seq)),
    [1004, 1005, 1008],
    "substreams 0 and 1 pushed as they came",
  );
  b.peer.tick(3_200);
  await pump(3_200);
  assert.equal(b.got.length, 3, "1006 and 1007 are not pulled before a push could have brought them");
  b.peer.tick(3_400);
  await pump(3_400);
  assert.deepEqual(
    b.got.map((p) => Number(p.seq)).sort(),
    [1004, 1005, 1006, 1007, 1008],
    "then pulled; nothing before the first piece B holds: it starts there",
  );
  assert.equal(b.peer.stats.piecesFromPeers, 5);
  assert.equal(a.peer.stats.piecesPushed, 3);
  assert.equal(a.peer.stats.piecesServed, 2);
});

const aHello: Message = { kind: "hello", hello: { ...seedHello.hello, peerId: 5n, role: Role.Viewer, reachable: false } } as Message;
const aStatus: Status = { ...seedStatus, freeSlots: 4, depth: [1, 1, 1, 1] };

test("a parent that stops pushing a substream while the stream flows is dropped for it; a seed takes it", async () => {
  const b = page(8n);
  b.peer.attach({ id: "seed", expectedPeerId: 99n }, new Wire(), 0);
  b.peer.attach({ id: "a", expectedPeerId: null }, new Wire(), 0);
  await feed(b.peer, "a", [aHello, { kind: "status", status: aStatus }], 1);
  await feed(b.peer, "seed", [seedHello, { kind: "status", status: seedStatus }], 1);
  b.peer.tick(2);
  assert.deepEqual(b.peer.parents(), ["a", "a", "a", "a"]);
  await feed(b.peer, "a", [{ kind: "subscribe_reply", accepted: 0b1111n }], 3);
  // A pushes every substream (a piece each 50 ms), then only 0 and 2: it lost 1 and 3 without a word.
  for (let q = 0; q < 28; q++) {
    if (q < 8 || q % 2 === 0) await feed(b.peer, "a", [{ kind: "piece", piece: sign(1000 + q) }], 10 + q * 50);
  }
  b.peer.tick(1_200);
  assert.deepEqual(b.peer.parents(), ["a", "a", "a", "a"], "not before a second of silence");
  b.peer.tick(1_300); // 1005 (substream 1) came at 260, 1007 (substream 3) at 360
  assert.deepEqual(b.peer.parents(), ["a", "seed", "a", "a"]);
  b.peer.tick(1_400);
  assert.deepEqual(b.peer.parents(), ["a", "seed", "a", "seed"]);
});

test("a piece asked of a page that stays silent is asked of a seed once one is due, and a leaving page says so", async () => {
  const b = page(8n);
  const seed = new Wire();
  const toA = new Wire();
  b.peer.attach({ id: "seed", expectedPeerId: 99n }, seed, 0);
  b.peer.attach({ id: "a", expectedPeerId: null }, toA, 0);
  await feed(b.peer, "seed", [seedHello, { kind: "status", status: seedStatus }], 1);
  await feed(b.peer, "a", [aHello, { kind: "status", status: aStatus }], 1);
  // 1001 never comes; 1002 says it exists from t = 10.
  await feed(b.peer, "seed", [{ kind: "piece", piece: sign(1000) }, { kind: "piece", piece: sign(1002) }], 10);
  seed.take();
  toA.take();
  const requests = (w: Wire) => w.take().flatMap((m) => (m.kind === "request" ? m.seqs.map(Number) : []));
  b.peer.tick(300);
  assert.deepEqual(requests(toA), [1001], "a page fed its substream is asked first");
  assert.deepEqual(requests(seed), []);
  b.peer.tick(500);
  assert.deepEqual([...requests(toA), ...requests(seed)], [], "its answer is awaited");
  b.peer.tick(650);
  assert.deepEqual(requests(seed), [1001], "a seed is asked once due, though the page's answer is still pending");
  b.peer.tick(700);
  assert.deepEqual([...requests(toA), ...requests(seed)], [], "and then the seed's answer is awaited");
  // Leaving: every neighbour is told, so its children re-parent at once.
  b.peer.leave();
  for (const w of [seed, toA]) {
    assert.deepEqual(
      w.take().filter((m) => m.kind === "goodbye"),
      [{ kind: "goodbye", reason: Goodbye.Leaving }],
    );
  }
  assert.equal(b.peer.neighbours, 0);
});

/** Page 8, fed every substream by the seed (a piece of each by 13 ms). */
async function seedFed() {
  const b = page(8n);
  b.peer.attach({ id: "seed", expectedPeerId: 99n }, new Wire(), 0);
  await feed(b.peer, "seed", [seedHello, { kind: "status", status: seedStatus }], 1);
  b.peer.tick(2);
  await feed(b.peer, "seed", [{ kind: "subscribe_reply", accepted: 0b1111n }], 3);
  for (let q = 0; q < 4; q++) await feed(b.peer, "seed", [{ kind: "piece", piece: sign(1000 + q) }], 10 + q);
  return b;
}

test("a page moves off the seed to each neighbour's own club as soon as it meets it, then the other substreams in turn", async () => {
  const b = await seedFed();
  assert.deepEqual(b.peer.parents(), ["seed", "seed", "seed", "seed"]);
  // A page in club 1 (5 mod 4) and a native viewer in club 3 (7 mod 4), both fed by the seed.
  const toV = new Wire();
  b.peer.attach({ id: "a", expectedPeerId: null }, new Wire(), 20);
  b.peer.attach({ id: "v", expectedPeerId: null }, toV, 20);
  await feed(b.peer, "a", [aHello, { kind: "status", status: aStatus }], 21);
  assert.deepEqual(b.peer.parents(), ["seed", "a", "seed", "seed"], "club 1 to the page in it when met, not substream 0");
  const vHello = { kind: "hello", hello: { ...seedHello.hello, peerId: 7n, role: Role.Viewer, reachable: true } } as Message;
  await feed(b.peer, "v", [vHello, { kind: "status", status: aStatus }], 22);
  assert.deepEqual(b.peer.parents(), ["seed", "a", "seed", "v"], "club 3 to the viewer in it when met, not substream 2");
  await feed(b.peer, "v", [{ kind: "subscribe_reply", accepted: 0b1000n }], 23);
  // A status that is not a neighbour's first moves nothing: the reviews do, one at a time.
  await feed(b.peer, "a", [{ kind: "status", status: aStatus }], 1_000);
  assert.deepEqual(b.peer.parents(), ["seed", "a", "seed", "v"]);
  // Then the other substreams in turn, from where the last move left off.
  b.peer.tick(2_000);
  assert.deepEqual(b.peer.parents(), ["a", "a", "seed", "v"]);
  b.peer.tick(4_000);
  assert.deepEqual(b.peer.parents(), ["a", "a", "a", "v"]);
});

test("a page tells its neighbours soon when its place in a tree changes, not only every 3 s", async () => {
  const b = page(8n);
  const toA = new Wire();
  b.peer.attach({ id: "a", expectedPeerId: null }, toA, 0);
  await feed(b.peer, "a", [aHello, { kind: "status", status: aStatus }, { kind: "subscribe_reply", accepted: 0b1111n }], 1);
  b.peer.tick(600);
  const statuses = () => toA.take().flatMap((m) => (m.kind === "status" ? [m.status] : []));
  assert.deepEqual(statuses().at(-1)?.depth, [255, 255, 255, 255], "not fed yet");
  for (let q = 0; q < 4; q++) await feed(b.peer, "a", [{ kind: "piece", piece: sign(1000 + q) }], 700 + q);
  b.peer.tick(800);
  assert.deepEqual(statuses(), [], "at most one such Status each 500 ms");
  b.peer.tick(1_100);
  const now = statuses();
  assert.equal(now.length, 1);
  assert.deepEqual(now[0].depth, [2, 2, 2, 2], "fed through A, 1 hop from a seed");
  b.peer.tick(1_650);
  assert.deepEqual(statuses(), [], "nothing changed: nothing until the round at 3 s");
});

test("a page whose feed went takes, for 3 s, no parent that may hang below where it was", async () => {
  const b = page(8n);
  // B is fed every substream by X (depth 2, branch 50). C advertises depth 3 in branch 50:
  // it may be B's own child's child, not heard of B's loss yet. D is deeper, in branch 60.
  const xHello = { kind: "hello", hello: { ...seedHello.hello, peerId: 11n, role: Role.Viewer, reachable: false } } as Message;
  const cHello = { kind: "hello", hello: { ...seedHello.hello, peerId: 12n, role: Role.Viewer, reachable: false } } as Message;
  const dHello = { kind: "hello", hello: { ...seedHello.hello, peerId: 13n, role: Role.Viewer, reachable: false } } as Message;
  const branch = (depth: number, root: bigint): Status => ({
    ...aStatus,
    depth: [depth, depth, depth, depth],
    root: [root, root, root, root],
    parent: [77n, 77n, 77n, 77n],
  });
  for (const [id, hello, st] of [
    ["x", xHello, branch(1, 50n)],
    ["c", cHello, branch(3, 50n)],
    ["d", dHello, branch(4, 60n)],
  ] as const) {
    b.peer.attach({ id, expectedPeerId: null }, new Wire(), 0);
    await feed(b.peer, id, [hello, { kind: "status", status: st }], 1);
  }
  assert.deepEqual(b.peer.parents(), ["x", "x", "x", "x"]);
  await feed(b.peer, "x", [{ kind: "subscribe_reply", accepted: 0b1111n }], 2);
  for (let q = 0; q < 4; q++) await feed(b.peer, "x", [{ kind: "piece", piece: sign(1000 + q) }], 10 + q);
  b.peer.tick(100);
  await feed(b.peer, "x", [{ kind: "goodbye", reason: Goodbye.Leaving }], 200);
  assert.deepEqual(b.peer.parents(), ["d", "d", "d", "d"], "not C, though nearer a seed by its word");
  // Once the news had time to reach all B fed, C's word counts again.
  await feed(b.peer, "d", [{ kind: "goodbye", reason: Goodbye.Leaving }], 3_300);
  b.peer.tick(3_300);
  assert.deepEqual(b.peer.parents(), ["c", "c", "c", "c"]);
});

test("a page that knows no one near a seed still moves off it, to the nearest page up to depth 4", async () => {
  const b = await seedFed();
  // A page fed at depth 5 in substreams 0 and 1, depth 4 in 2 and 3 (branch 50).
  const deep: Status = { ...aStatus, depth: [5, 5, 4, 4], root: [50n, 50n, 50n, 50n], parent: [77n, 77n, 77n, 77n] };
  b.peer.attach({ id: "a", expectedPeerId: null }, new Wire(), 20);
  await feed(b.peer, "a", [aHello, { kind: "status", status: deep }], 21);
  assert.deepEqual(b.peer.parents(), ["seed", "seed", "a", "seed"], "at once when met, the nearest first");
  b.peer.tick(2_000);
  assert.deepEqual(b.peer.parents(), ["seed", "seed", "a", "a"]);
  b.peer.tick(4_000);
  assert.deepEqual(b.peer.parents(), ["seed", "seed", "a", "a"], "not to depth 5: the seed stays");
});

test("a page offers the push slots its upload carries at the stream's bitrate", async () => {
  // Nine pieces of 376 bytes 50 ms apart: 9 × 3,008 bits in 400 ms, 67.7 kbit/s, so
  // 16.9 kbit/s a substream. With 200 kbit/s of upload, 80 % for pushes: 9 slots.
  const freeSlots = async (uploadKbps: number) => {
    const b = page(8n, [], uploadKbps);
    const toSeed = new Wire();
    b.peer.attach({ id: "seed", expectedPeerId: 99n }, toSeed, 0);
    await feed(b.peer, "seed", [seedHello, { kind: "status", status: seedStatus }, { kind: "subscribe_reply", accepted: 0b1111n }], 1);
    const before = toSeed.take().find((m) => m.kind === "status");
    for (let q = 0; q < 9; q++) await feed(b.peer, "seed", [{ kind: "piece", piece: sign(1000 + q) }], 10 + q * 50);
    b.peer.tick(3_100);
    const after = toSeed.take().find((m) => m.kind === "status");
    assert.ok(before?.kind === "status" && after?.kind === "status");
    return [before.status.freeSlots, after.status.freeSlots];
  };
  assert.deepEqual(await freeSlots(200), [8, 9], "8 until the bitrate is known");
  assert.deepEqual(await freeSlots(2_000), [8, 16], "at most 16");
  assert.deepEqual(await freeSlots(60), [8, 0], "less than a stream: a leaf");
});
