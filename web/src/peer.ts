// The page's peer: PROTOCOL.md §3 for a viewer in a web page, a second implementation
// beside swarm/src/peer (the reference). Kept small: it subscribes to each substream
// from the neighbour that is nearest a seed, verifies every piece before it keeps,
// plays or passes it on, forwards its club's substream to pages that subscribe, answers
// requests from its window, and pulls what its parents did not push in time.
//
// Sans-IO like the reference: no timers and no sockets inside. The owner hands it each
// link's bytes (`receive`) and calls `tick(nowMs)` every 100 ms or so; it writes to the
// links it was given. Every byte from a link is hostile until checked: a bad frame is
// `Goodbye(Malformed)`, a forged piece `Goodbye(Forged)` and a ban of that peer id, a
// flood `Goodbye(Flooding)`.

import { blake3 } from "@noble/hashes/blake3.js";

import { Flags, type Piece, PieceError, verifyPieceAsync } from "./piece.js";
import { ChannelTransport, type Channel } from "./transport.js";
import { Goodbye, type Hello, type Message, PROTOCOL_VERSION, Role, type Status, WireError } from "./wire.js";

const NONE = 0xffff_ffff_ffff_ffffn;
/** Pieces kept behind the newest (the reference's window). */
const WINDOW = 256n;
/** Depth at and beyond which no one takes a substream from us (PROTOCOL.md §3.2). */
const MAX_DEPTH = 32;
const STATUS_EVERY_MS = 3_000;
/** Least time between two Status sent because our room or a tree's news changed. */
const STATUS_MIN_GAP_MS = 500;
/**
 * How long after our feed of a substream got worse we take only a parent that cannot
 * be below where we were: what we fed advertises the old distances until it hears
 * (PROTOCOL.md §3.2; the status interval, time for the news to reach all we fed).
 */
const GUARD_MS = STATUS_EVERY_MS;
const PING_EVERY_MS = 10_000;
const IDLE_MS = 15_000;
/** A parent that pushed nothing for this long while its substream flows is dropped. */
const PARENT_STALL_MS = 1_000;
/** A neighbour that refused or dropped a substream is not asked for it again for this long. */
const REFUSED_MS = 5_000;
/** A piece known to exist (a later one arrived) is pulled if not pushed within this. */
const REPAIR_WAIT_MS = 250;
const REQUEST_TIMEOUT_MS = 500;
/** A piece missing this long is asked of a seed (the part is due soon after). */
const SEED_REPAIR_AFTER_MS = 600;
/** A page this near a seed (in hops) is taken before the seed itself. */
const NEAR_SEED = 2;
/** The deepest page a substream a seed pushes moves to, when none is nearer. */
const LEAVE_DEPTH = 4;
/** How often a page looks for a page to take a substream from instead of a seed. */
const REVIEW_EVERY_MS = 1_000;
/** Logged: a gap between ingest's cuts of successive newest pieces beyond this (µs). */
const CUT_GAP_LOGGED_US = 400_000n;
/** Logged: the newest piece reaching us this much later than usual (ms), and when that ends. */
const NEWEST_LATE_MS = 300;
const MAX_REQUEST_SEQS = 32;
/** Messages a link may send: a burst, then a rate (the reference shell's limits). */
const MESSAGE_BURST = 4_000;
const MESSAGES_PER_S = 2_000;
/** Pieces in a row a non-parent may send that we cannot use before it is flooding. */
const MAX_USELESS = 128;
/**
 * Substreams pushed to children in all (each child's each substream is one): what the
 * upload a page claims carries at the stream's bitrate, as the reference peer reckons
 * it (`PUSH_SHARE` of the upload for pushes), up to `MAX_CHILD_SLOTS`; this many until
 * the pieces held tell the bitrate.
 */
const DEFAULT_CHILD_SLOTS = 8;
const MAX_CHILD_SLOTS = 16;
const PUSH_SHARE = 0.8;
/** Bytes queued on a link past which we push no more to it (it pulls what it misses). */
const MAX_QUEUED = 1 << 20;

/** The Shoal peer id a 20-byte tracker id stands for (PROTOCOL.md §6): BLAKE3's first 8 bytes, little-endian. */
export function peerIdOf(trackerId: Uint8Array): bigint {
  return new DataView(blake3(trackerId).buffer).getBigUint64(0, true);
}

export interface LinkInfo {
  /** A link's name for logs and stats. */
  readonly id: string;
  /** The Shoal peer id its tracker identity says it must use (null: not known). */
  readonly expectedPeerId: bigint | null;
}

export interface PeerOptions {
  /** The channel's 32-byte public key. */
  channel: Uint8Array;
  peerId: bigint;
  nSubstreams: number;
  /** Upload offered, kbit/s (Hello); forwarding slots follow from it. */
  uploadKbps: number;
  /** Substreams pushed to children in all ({@link DEFAULT_CHILD_SLOTS} if not set). */
  childSlots?: number;
  /** A new piece verified and kept (in arrival order; the player orders them). */
  onPiece?: (piece: Piece, fromSeed: boolean) => void;
  /** A link ended (by us or by the other side): the owner closes its data channel. */
  onClose?: (link: string, why: string) => void;
  log?: (line: string) => void;
}

/** Counters the page shows and the tests read. */
export interface PeerStats {
  piecesFromPeers: number;
  piecesFromSeeds: number;
  /** Of those from seeds, the ones we asked for (repairs), not pushed. */
  piecesPulledFromSeeds: number;
  bytesFromPeers: number;
  bytesFromSeeds: number;
  bytesSent: number;
  piecesPushed: number;
  piecesServed: number;
  forgedRefused: number;
  /** Links refused at Hello because their peer id is banned (they came back). */
  bannedAtHello: number;
  /** Offers and answers from a banned peer turned away before any connection. */
  bannedTurnedAway: number;
  malformed: number;
  flooding: number;
  requestsSent: number;
}

interface Link {
  info: LinkInfo;
  transport: ChannelTransport;
  hello: Hello | null;
  status: Status | null;
  /** Substreams we asked it to push, and those it said it pushes. */
  asked: bigint;
  pushes: bigint;
  /** Substreams it has pushed us a piece of since it took them. */
  delivered: bigint;
  /** Substreams we push to it. */
  children: bigint;
  /** When it last pushed us a piece of each substream (ms). */
  lastPush: number[];
  /** Substreams it refused or dropped, until (ms). */
  refusedUntil: number[];
  heardAt: number;
  pingAt: number;
  tokens: number;
  refilledAt: number;
  useless: number;
  /** Requests out to it: seq → sent at (ms). */
  requests: Map<bigint, number>;
  /** Its pieces' verifications, chained in arrival order. */
  verified: Promise<void>;
}

/**
 * What taking `l` as parent of substream `s` costs: its depth (each hop is a piece's
 * store-and-forward delay), a seed counted as depth 2.5 — a page near a seed is taken
 * before the seed itself, whose upload is the broadcaster's cost.
 */
function parentCost(l: Link, s: number): number {
  return l.hello?.role === Role.Seed ? NEAR_SEED + 0.5 : (l.status?.depth[s] ?? 255);
}

export class PagePeer {
  private readonly links = new Map<string, Link>();
  private readonly window = new Map<bigint, Piece>();
  /** When we learned each missing piece exists (ms). */
  private readonly missingSince = new Map<bigint, number>();
  private readonly banned = new Set<bigint>();
  /** Pieces being verified, by sequence number. */
  private readonly verifying = new Map<bigint, Promise<unknown>>();
  private newest: bigint | null = null;
  /** The newest piece's cut time (µs, ingest's clock), and whether it came late. */
  private newestCut: bigint | null = null;
  private newestLate = false;
  /**
   * How long after its cut a newest piece usually reaches us (ms): the least seen,
   * rising 1 ms a piece so that a slow drift of the clocks is followed.
   */
  private usualLag: number | null = null;
  private first: bigint | null = null;
  private reviewAt = 0;
  /** The substream the next review of seed-fed substreams starts at. */
  private leaveFrom = 0;
  private oldest: bigint | null = null;
  private segmentStart: bigint | null = null;
  private statusAt = 0;
  /** Push slots our upload gives at the stream's bitrate (`updateSlots`, each tick). */
  private uploadSlots = DEFAULT_CHILD_SLOTS;
  /** What our last Status to everyone said of our room and our place in each tree. */
  private told: { full: boolean; depth: number[]; root: bigint[] } | null = null;
  /** Each substream's depth and root as last seen, to tell when our feed got worse. */
  private readonly feeds: { depth: number; root: bigint }[];
  /** Each substream's depth and root before our feed got worse, and until when they guard. */
  private readonly guards: { depth: number; root: bigint; until: number }[];
  private lastPieceAt = 0;
  private now = 0;
  readonly club: number;
  readonly stats: PeerStats = {
    piecesFromPeers: 0,
    piecesFromSeeds: 0,
    piecesPulledFromSeeds: 0,
    bytesFromPeers: 0,
    bytesFromSeeds: 0,
    bytesSent: 0,
    piecesPushed: 0,
    piecesServed: 0,
    forgedRefused: 0,
    bannedAtHello: 0,
    bannedTurnedAway: 0,
    malformed: 0,
    flooding: 0,
    requestsSent: 0,
  };

  constructor(private readonly opts: PeerOptions) {
    this.club = Number(opts.peerId % BigInt(opts.nSubstreams));
    this.feeds = Array.from({ length: opts.nSubstreams }, () => ({ depth: 255, root: NONE }));
    this.guards = Array.from({ length: opts.nSubstreams }, () => ({ depth: 255, root: NONE, until: 0 }));
  }

  /**
   * Whether to take up an offer or answer from the page whose Shoal peer id is
   * `peerId`: not if it sent us a forgery. The tracker keeps handing out a banned page's
   * offers; refused at Hello, each came back as a WebRTC connection (a DTLS handshake
   * on both sides) every few seconds for as long as it stayed.
   */
  admits(peerId: bigint): boolean {
    if (!this.banned.has(peerId)) return true;
    this.stats.bannedTurnedAway += 1;
    return false;
  }

  /** Neighbours that said Hello. */
  get neighbours(): number {
    return [...this.links.values()].filter((l) => l.hello !== null).length;
  }

  /** Per substream: the link that pushes it to us (null: none). */
  parents(): (string | null)[] {
    return Array.from({ length: this.opts.nSubstreams }, (_, s) => this.parentOf(s)?.info.id ?? null);
  }

  /** The newest piece known to exist. */
  get newestSeq(): bigint | null {
    return this.newest;
  }

  /** The first piece it kept (what came before, it never pulls). */
  get firstSeq(): bigint | null {
    return this.first;
  }

  /** A verified piece we hold. */
  piece(seq: bigint): Piece | undefined {
    return this.window.get(seq);
  }

  /** A data channel opened: say Hello and Status. */
  attach(info: LinkInfo, channel: Channel, nowMs: number): void {
    this.now = nowMs;
    const link: Link = {
      info,
      transport: new ChannelTransport(channel),
      hello: null,
      status: null,
      asked: 0n,
      pushes: 0n,
      delivered: 0n,
      children: 0n,
      lastPush: new Array(this.opts.nSubstreams).fill(nowMs),
      refusedUntil: new Array(this.opts.nSubstreams).fill(0),
      heardAt: nowMs,
      pingAt: nowMs + PING_EVERY_MS,
      tokens: MESSAGE_BURST,
      refilledAt: nowMs,
      useless: 0,
      requests: new Map(),
      verified: Promise.resolve(),
    };
    this.links.set(info.id, link);
    this.send(link, {
      kind: "hello",
      hello: {
        version: PROTOCOL_VERSION,
        channel: this.opts.channel,
        peerId: this.opts.peerId,
        role: Role.Viewer,
        reachable: false,
        nSubstreams: this.opts.nSubstreams,
        uploadKbps: this.opts.uploadKbps,
      },
    });
  }

  /** The page is going away: every link is told (`Goodbye(Leaving)`), so children re-parent at once. */
  leave(): void {
    for (const link of [...this.links.values()]) this.goodbye(link, Goodbye.Leaving, "the page is closing");
  }

  /** The data channel closed (the other side went, or the network did). */
  detach(id: string): void {
    const link = this.links.get(id);
    if (!link) return;
    this.links.delete(id);
    if (link.pushes !== 0n) this.chooseParents();
  }

  /** Bytes from a link's data channel. */
  receive(id: string, data: Uint8Array, nowMs: number): void {
    this.now = nowMs;
    const link = this.links.get(id);
    if (!link) return;
    let messages: Message[];
    try {
      messages = link.transport.receive(data);
    } catch (e) {
      return this.goodbye(link, Goodbye.Malformed, e instanceof WireError ? e.message : String(e));
    }
    link.tokens = Math.min(MESSAGE_BURST, link.tokens + ((nowMs - link.refilledAt) / 1000) * MESSAGES_PER_S);
    link.refilledAt = nowMs;
    for (const m of messages) {
      if (!this.links.has(id)) return;
      link.tokens -= m.kind === "have_map" ? 1 + m.words.length : 1;
      if (link.tokens < 0) {
        this.stats.flooding += 1;
        return this.goodbye(link, Goodbye.Flooding, "more messages than any honest peer sends");
      }
      link.heardAt = nowMs;
      this.message(link, m);
    }
  }

  private message(link: Link, m: Message): void {
    if (link.hello === null && m.kind !== "hello") {
      return this.goodbye(link, Goodbye.Malformed, `${m.kind} before hello`);
    }
    switch (m.kind) {
      case "hello":
        return this.onHello(link, m.hello);
      case "status": {
        if (m.status.depth.length !== this.opts.nSubstreams) {
          return this.goodbye(link, Goodbye.Malformed, "status for another number of substreams");
        }
        const met = link.status === null;
        link.status = m.status;
        // A joiner starts on whoever answered first, most often the seed: a page just
        // met that is fed near a seed takes a substream off it now, not at a review.
        if (met && link.hello?.role !== Role.Seed) this.leaveSeeds();
        return this.chooseParents();
      }
      case "subscribe":
        return this.onSubscribe(link, m.substreams);
      case "subscribe_reply": {
        const dropped = link.asked & ~m.accepted;
        link.pushes = m.accepted & link.asked;
        link.asked = link.pushes;
        link.delivered &= link.pushes;
        for (let s = 0; s < this.opts.nSubstreams; s++) {
          if (dropped & (1n << BigInt(s))) link.refusedUntil[s] = this.now + REFUSED_MS;
          if (m.accepted & (1n << BigInt(s))) link.lastPush[s] = this.now;
        }
        if (dropped !== 0n) this.chooseParents();
        return;
      }
      case "piece":
        return this.onPiece(link, m.piece);
      case "have":
        return this.learnExists(m.seq);
      case "have_map":
        return;
      case "request":
        return this.onRequest(link, m.seqs);
      case "dont_have":
      case "busy":
        link.requests.delete(m.seq);
        return;
      case "ping":
        return this.send(link, { kind: "pong", nonce: m.nonce });
      case "pong":
        return;
      case "goodbye":
        this.links.delete(link.info.id);
        this.opts.onClose?.(link.info.id, `goodbye ${Goodbye[m.reason] ?? m.reason}`);
        if (link.pushes !== 0n) this.chooseParents();
        return;
    }
  }

  private onHello(link: Link, h: Hello): void {
    if (link.hello !== null) return this.goodbye(link, Goodbye.Malformed, "a second hello");
    if (h.version !== PROTOCOL_VERSION) return this.goodbye(link, Goodbye.BadVersion, `version ${h.version}`);
    if (!h.channel.every((b, i) => b === this.opts.channel[i])) {
      return this.goodbye(link, Goodbye.WrongChannel, "another channel");
    }
    if (this.banned.has(h.peerId)) {
      this.stats.bannedAtHello += 1;
      return this.goodbye(link, Goodbye.Forged, "banned peer id");
    }
    if (link.info.expectedPeerId !== null && h.peerId !== link.info.expectedPeerId) {
      return this.goodbye(link, Goodbye.Malformed, "hello names another peer id than its tracker identity");
    }
    if (h.peerId === this.opts.peerId || [...this.links.values()].some((l) => l.hello?.peerId === h.peerId)) {
      return this.goodbye(link, Goodbye.Duplicate, "already connected");
    }
    if (h.nSubstreams !== this.opts.nSubstreams) {
      return this.goodbye(link, Goodbye.Malformed, `${h.nSubstreams} substreams, the channel has ${this.opts.nSubstreams}`);
    }
    link.hello = h;
    this.send(link, { kind: "status", status: this.status() });
  }

  /**
   * What we push to `link`: the substreams it asks for that we are fed (never back up
   * the tree: not what it feeds us), our club's first, while slots last (a slot is one
   * substream to one child). Pages forward beyond their club: in a small audience a
   * club can have no page in it, and its substream would come from the seed for all.
   */
  private onSubscribe(link: Link, wanted: bigint): void {
    let free = this.slots() - this.childSubstreams(link);
    let accepted = 0n;
    const order = [this.club, ...Array.from({ length: this.opts.nSubstreams }, (_, s) => s).filter((s) => s !== this.club)];
    for (const s of order) {
      const bit = 1n << BigInt(s);
      if (free <= 0 || !(wanted & bit) || link.pushes & bit || this.depth(s) >= MAX_DEPTH) continue;
      accepted |= bit;
      free -= 1;
    }
    if (accepted !== link.children) this.opts.log?.(`pushing ${accepted.toString(2)} to ${link.info.id}`);
    link.children = accepted;
    this.send(link, { kind: "subscribe_reply", accepted });
  }

  private slots(): number {
    return this.opts.childSlots ?? this.uploadSlots;
  }

  /** Our push slots from our upload and the stream's bitrate over the pieces held. */
  private updateSlots(): void {
    const n = this.opts.nSubstreams;
    if (this.window.size < 2 * n) return;
    let bytes = 0;
    let lo: bigint | null = null;
    let hi: bigint | null = null;
    for (const p of this.window.values()) {
      bytes += p.payload.length;
      if (lo === null || p.timestampUs < lo) lo = p.timestampUs;
      if (hi === null || p.timestampUs > hi) hi = p.timestampUs;
    }
    const spanMs = Number((hi as bigint) - (lo as bigint)) / 1_000;
    if (spanMs <= 0) return;
    const kbps = (bytes * 8) / spanMs;
    // A page that can't upload one whole stream would add a long store-and-forward hop
    // to every piece it relays: it stays a leaf and only serves repairs.
    this.uploadSlots =
      this.opts.uploadKbps < kbps ? 0 : Math.min(MAX_CHILD_SLOTS, Math.floor((this.opts.uploadKbps * PUSH_SHARE) / (kbps / n)));
  }

  /** Substreams we push, to all children but `except`. */
  private childSubstreams(except?: Link): number {
    let n = 0;
    for (const l of this.links.values()) {
      if (l === except) continue;
      for (let m = l.children; m !== 0n; m &= m - 1n) n += 1;
    }
    return n;
  }

  private onPiece(link: Link, piece: Piece): void {
    const s = Number(piece.seq % BigInt(this.opts.nSubstreams));
    const fromParent = (link.pushes & (1n << BigInt(s))) !== 0n;
    link.requests.delete(piece.seq);
    const old = this.oldest !== null && piece.seq < this.oldest;
    if (this.window.has(piece.seq) || this.verifying.has(piece.seq) || old) {
      if (!fromParent && ++link.useless > MAX_USELESS) {
        this.stats.flooding += 1;
        this.goodbye(link, Goodbye.Flooding, "pieces we cannot use");
      }
      return;
    }
    // Verified off the message path (WebCrypto is asynchronous), one link's pieces in
    // the order they came: kept, played and passed on only once verified, and only
    // while its sender is still a neighbour (after a forgery, nothing more of its).
    const check = (link.verified = link.verified.then(() => verifyPieceAsync(piece, this.opts.channel))).then(
      () => this.links.get(link.info.id) === link && this.verified(link, piece, s, fromParent),
      (e) => {
        if (this.links.get(link.info.id) !== link) return;
        if (e instanceof PieceError && e.forged) {
          this.stats.forgedRefused += 1;
          if (link.hello) this.banned.add(link.hello.peerId);
          return this.goodbye(link, Goodbye.Forged, e.message);
        }
        return this.goodbye(link, Goodbye.Malformed, String(e));
      },
    );
    this.verifying.set(
      piece.seq,
      check.finally(() => this.verifying.delete(piece.seq)),
    );
  }

  /** Every piece received so far has been verified (or refused). */
  async settled(): Promise<void> {
    while (this.verifying.size > 0) await Promise.all([...this.verifying.values()]);
  }

  private verified(link: Link, piece: Piece, s: number, fromParent: boolean): void {
    link.useless = 0;
    this.lastPieceAt = this.now;
    if (fromParent) {
      link.lastPush[s] = this.now;
      link.delivered |= 1n << BigInt(s);
    }
    const fromSeed = link.hello?.role === Role.Seed;
    if (fromSeed) {
      this.stats.piecesFromSeeds += 1;
      if (!fromParent) this.stats.piecesPulledFromSeeds += 1;
      this.stats.bytesFromSeeds += piece.wire.length;
    } else {
      this.stats.piecesFromPeers += 1;
      this.stats.bytesFromPeers += piece.wire.length;
    }
    this.keep(piece);
    this.opts.onPiece?.(piece, fromSeed);
    // Passed on to the children of its substream.
    for (const child of this.links.values()) {
      if (child === link || !(child.children & (1n << BigInt(s)))) continue;
      if (child.transport.queued > MAX_QUEUED) continue;
      this.send(child, { kind: "piece", piece });
      this.stats.piecesPushed += 1;
    }
  }

  private keep(piece: Piece): void {
    if (this.first === null || piece.seq < this.first) this.first = piece.seq;
    this.window.set(piece.seq, piece);
    this.missingSince.delete(piece.seq);
    if ((piece.flags & Flags.SEGMENT_START) !== 0 && (this.segmentStart === null || piece.seq > this.segmentStart)) {
      this.segmentStart = piece.seq;
    }
    if (this.newest === null || piece.seq > this.newest) this.noteNewest(piece);
    this.learnExists(piece.seq);
    if (this.oldest === null || piece.seq < this.oldest) this.oldest = piece.seq;
    const floor = (this.newest ?? piece.seq) - WINDOW;
    if (this.oldest < floor) {
      for (const seq of this.window.keys()) if (seq < floor) this.window.delete(seq);
      for (const seq of this.missingSince.keys()) if (seq < floor) this.missingSince.delete(seq);
      this.oldest = floor;
    }
  }

  /**
   * Logs where a stall began upstream of us: a gap in ingest's cuts (the encoder or
   * ingest paused), or the newest pieces reaching us late (a relay or a seed did).
   */
  private noteNewest(piece: Piece): void {
    const cut = piece.timestampUs;
    if (this.newestCut !== null && cut - this.newestCut > CUT_GAP_LOGGED_US) {
      this.opts.log?.(`ingest cut ${piece.seq} ${(cut - this.newestCut) / 1_000n} ms after the newest before it`);
    }
    this.newestCut = cut;
    const lag = this.now - Number(cut / 1_000n);
    const usual = (this.usualLag = Math.min(lag, (this.usualLag ?? lag) + 1));
    const late = lag - usual > NEWEST_LATE_MS;
    if (late !== this.newestLate) {
      this.opts.log?.(
        late
          ? `newest piece ${piece.seq} came ${lag - usual} ms later than usual (${lag} ms after its cut)`
          : `newest pieces on time again (${lag} ms after the cut)`,
      );
    }
    this.newestLate = late;
  }

  /** A piece up to `seq` exists: what we lack before it is missing from now on. */
  private learnExists(seq: bigint): void {
    if (this.newest === null) {
      this.newest = seq;
      return;
    }
    if (seq <= this.newest) return;
    // A claim far ahead is not trusted (PROTOCOL.md §3.3); a verified piece moved `newest` already.
    const from = seq - this.newest > WINDOW ? seq - WINDOW : this.newest + 1n;
    for (let q = from; q < seq; q++) if (!this.window.has(q)) this.missingSince.set(q, this.now);
    this.newest = seq;
  }

  private onRequest(link: Link, seqs: bigint[]): void {
    for (const seq of seqs) {
      const p = this.window.get(seq);
      if (!p) this.send(link, { kind: "dont_have", seq });
      else if (link.transport.queued > MAX_QUEUED) this.send(link, { kind: "busy", seq });
      else {
        this.send(link, { kind: "piece", piece: p });
        this.stats.piecesServed += 1;
      }
    }
  }

  /** Housekeeping: parents, repairs, Status, keep-alive, idle links. */
  tick(nowMs: number): void {
    this.now = nowMs;
    for (const link of [...this.links.values()]) {
      if (nowMs - link.heardAt > IDLE_MS) {
        this.goodbye(link, Goodbye.Idle, "silent for 15 s");
        continue;
      }
      if (nowMs >= link.pingAt) {
        link.pingAt = nowMs + PING_EVERY_MS;
        this.send(link, { kind: "ping", nonce: BigInt(nowMs) });
      }
      for (const [seq, at] of link.requests) if (nowMs - at > REQUEST_TIMEOUT_MS) link.requests.delete(seq);
    }
    this.dropStalledParents();
    if (nowMs - this.reviewAt >= REVIEW_EVERY_MS) {
      this.reviewAt = nowMs;
      this.leaveSeeds();
    }
    this.chooseParents();
    this.repair();
    this.updateSlots();
    // To everyone every few seconds, and soon when our room or our place in a tree
    // changed: a neighbour choosing a parent must not take one fed through itself.
    const status = this.status();
    const told = this.told;
    const changed =
      told === null ||
      told.full !== (status.freeSlots === 0) ||
      status.depth.some((d, s) => d !== told.depth[s] || status.root[s] !== told.root[s]);
    const since = nowMs - this.statusAt;
    if (since >= STATUS_EVERY_MS || (changed && since >= STATUS_MIN_GAP_MS)) {
      this.statusAt = nowMs;
      this.told = { full: status.freeSlots === 0, depth: status.depth, root: status.root };
      for (const link of this.links.values()) if (link.hello) this.send(link, { kind: "status", status });
    }
  }

  private dropStalledParents(): void {
    for (const link of this.links.values()) {
      for (let s = 0; s < this.opts.nSubstreams; s++) {
        const bit = 1n << BigInt(s);
        if (!(link.pushes & bit) || this.now - link.lastPush[s] < PARENT_STALL_MS) continue;
        // Stalled only while the stream flows (pieces still arrive from others): an
        // encoder's pause keeps the tree as it is.
        if (this.now - this.lastPieceAt >= PARENT_STALL_MS) continue;
        this.opts.log?.(`parent ${link.info.id} stalled on substream ${s}`);
        link.pushes &= ~bit;
        link.asked &= ~bit;
        link.delivered &= ~bit;
        link.refusedUntil[s] = this.now + REFUSED_MS;
        this.send(link, { kind: "subscribe", substreams: link.asked });
      }
    }
  }

  /**
   * Moves substreams a seed pushes to a page that is fed them and has room: the seed's
   * upload is the broadcaster's cost, and its slots are for pages that have no one
   * else. If the page refuses, the seed is chosen again.
   *
   * A page near a seed (depth ≤ `NEAR_SEED`) is taken first, and among those a
   * neighbour's own club (a native viewer forwards only its club, PROTOCOL.md §3.2; a
   * page takes its club first too); else the nearest page up to `LEAVE_DEPTH`: a page
   * that knows no one near the seed would otherwise stay a second root of the
   * substream for good, costing the seed one more copy of it. Ties go to the
   * substreams in turn from where the last review left off, so that a refusal (held
   * for `REFUSED_MS`, longer than a review) never keeps the same few in play.
   */
  private leaveSeeds(): void {
    const n = this.opts.nSubstreams;
    const cost = (l: Link, s: number): number => {
      const depth = (l.status as Status).depth[s];
      const club = Number((l.hello as Hello).peerId % BigInt(n)) === s;
      return (depth > NEAR_SEED ? 2 * MAX_DEPTH : 0) + (club ? 0 : MAX_DEPTH) + depth;
    };
    let move: { s: number; to: Link; cost: number } | undefined;
    for (let i = 0; i < n; i++) {
      const s = (this.leaveFrom + i) % n;
      const seed = this.parentOf(s);
      if (!seed || seed.hello?.role !== Role.Seed) continue;
      for (const l of this.links.values()) {
        const st = l.status;
        if (!l.hello || !st || l.hello.role === Role.Seed) continue;
        if (l.refusedUntil[s] > this.now || st.freeSlots === 0 || st.depth[s] > LEAVE_DEPTH) continue;
        if (!this.outsideOurBranch(l, st, s)) continue;
        const c = cost(l, s);
        if (!move || c < move.cost) move = { s, to: l, cost: c };
      }
    }
    if (!move) return;
    const { s, to } = move;
    const bit = 1n << BigInt(s);
    const seed = this.parentOf(s) as Link;
    this.leaveFrom = (s + 1) % n;
    this.opts.log?.(`substream ${s}: from the seed to page ${to.info.id}`);
    seed.asked &= ~bit;
    seed.pushes &= ~bit;
    seed.delivered &= ~bit;
    this.send(seed, { kind: "subscribe", substreams: seed.asked });
    to.asked |= bit;
    to.lastPush[s] = this.now;
    this.send(to, { kind: "subscribe", substreams: to.asked });
    // One move per review: the tree settles gradually.
  }

  /** Per substream: who feeds us (a seed or not), our depth, and the links we push it to. */
  tree(): { parent: string | null; seed: boolean; depth: number; children: string[] }[] {
    return Array.from({ length: this.opts.nSubstreams }, (_, s) => {
      const p = this.parentOf(s);
      const bit = 1n << BigInt(s);
      const children = [...this.links.values()].filter((l) => l.children & bit).map((l) => l.info.id);
      return { parent: p?.info.id ?? null, seed: p?.hello?.role === Role.Seed, depth: this.depth(s), children };
    });
  }

  private parentOf(s: number): Link | undefined {
    const bit = 1n << BigInt(s);
    for (const l of this.links.values()) if (l.asked & bit) return l;
    return undefined;
  }

  /** Our distance from a seed in substream `s` (255: none). */
  private depth(s: number): number {
    const p = this.parentOf(s);
    if (!p || !(p.delivered & (1n << BigInt(s))) || !p.status) return 255;
    return Math.min(255, p.status.depth[s] + 1);
  }

  /** The seed's child our branch of `s` hangs from (`NONE`: not fed). */
  private rootOf(s: number): bigint {
    const p = this.parentOf(s);
    if (!p?.hello || !(p.delivered & (1n << BigInt(s)))) return NONE;
    return p.hello.role === Role.Seed ? this.opts.peerId : (p.status?.root[s] ?? NONE);
  }

  /** Notes each substream whose feed got worse since last seen: its guard starts. */
  private noteFeeds(): void {
    for (let s = 0; s < this.opts.nSubstreams; s++) {
      const depth = this.depth(s);
      const was = this.feeds[s];
      if (depth > was.depth) {
        const g = this.guards[s];
        // Worse again while guarded: the best depth we had still bounds what fed us.
        const guarded = this.now < g.until;
        this.guards[s] = {
          depth: guarded ? Math.min(g.depth, was.depth) : was.depth,
          root: guarded ? g.root : was.root,
          until: this.now + GUARD_MS,
        };
      }
      this.feeds[s] = { depth, root: this.rootOf(s) };
    }
  }

  /**
   * Whether `l` (its last Status `st`) can feed us `s` without being fed through us:
   * not our child there, not naming us as its root or parent, and, for a while after
   * our feed got worse, above where we were or in another branch (PROTOCOL.md §3.2).
   */
  private outsideOurBranch(l: Link, st: Status, s: number): boolean {
    if (l.children & (1n << BigInt(s)) || st.root[s] === this.opts.peerId || st.parent[s] === this.opts.peerId) {
      return false;
    }
    const g = this.guards[s];
    if (this.now >= g.until || l.hello?.role === Role.Seed) return true;
    return st.depth[s] < g.depth || (st.root[s] !== NONE && st.root[s] !== g.root);
  }

  /** For each substream with no parent, the neighbour nearest a seed that may take us. */
  private chooseParents(): void {
    this.noteFeeds();
    const changed = new Set<Link>();
    for (let s = 0; s < this.opts.nSubstreams; s++) {
      if (this.parentOf(s)) continue;
      const bit = 1n << BigInt(s);
      let best: Link | undefined;
      for (const l of this.links.values()) {
        const st = l.status;
        if (!l.hello || !st || l.refusedUntil[s] > this.now) continue;
        if (st.depth[s] >= MAX_DEPTH || !this.outsideOurBranch(l, st, s)) continue;
        if (st.freeSlots === 0 && !(l.asked & bit)) continue;
        if (!best || parentCost(l, s) < parentCost(best, s)) best = l;
      }
      if (!best) continue;
      this.opts.log?.(`substream ${s}: parent ${best.info.id}`);
      best.asked |= bit;
      best.lastPush[s] = this.now;
      changed.add(best);
    }
    for (const l of changed) this.send(l, { kind: "subscribe", substreams: l.asked });
  }

  /** Pulls pieces missing for longer than a push takes, from whoever likely holds them. */
  private repair(): void {
    const batches = new Map<Link, bigint[]>();
    const n = BigInt(this.opts.nSubstreams);
    for (const [seq, since] of this.missingSince) {
      const waited = this.now - since;
      if (waited < REPAIR_WAIT_MS) continue;
      // Asked already: wait for the answer — but once a seed is due, a page's pending
      // answer does not hold it back (that page may be gone without a word).
      const asked = [...this.links.values()].filter((l) => l.requests.has(seq));
      const seedDue = waited >= SEED_REPAIR_AFTER_MS;
      if (asked.length > 0 && (!seedDue || asked.some((l) => l.hello?.role === Role.Seed))) continue;
      // A page that is fed its substream, the least busy; a seed once pages had their
      // chance (or when no page is fed it): seeds' upload is the broadcaster's cost;
      // else any page.
      const s = Number(seq % n);
      const room = (l: Link) => l.requests.size + (batches.get(l)?.length ?? 0) < MAX_REQUEST_SEQS;
      let page: Link | undefined;
      let seed: Link | undefined;
      let other: Link | undefined;
      for (const l of this.links.values()) {
        if (!l.hello || !l.status || !room(l)) continue;
        if (l.hello.role === Role.Seed) seed ??= l;
        else if (l.status.depth[s] < MAX_DEPTH && (!page || l.requests.size < page.requests.size)) page = l;
        else other ??= l; // not fed it when it last said, but may hold it by now
      }
      const best = (seedDue ? (seed ?? page) : (page ?? seed)) ?? other;
      if (!best || (asked.length > 0 && best !== seed)) continue;
      const batch = batches.get(best) ?? [];
      batch.push(seq);
      batches.set(best, batch);
    }
    for (const [src, seqs] of batches) {
      seqs.sort((a, b) => (a < b ? -1 : 1));
      for (const q of seqs) src.requests.set(q, this.now);
      this.stats.requestsSent += seqs.length;
      const who = src.hello?.role === Role.Seed ? "seed" : "page";
      this.opts.log?.(`repair ${seqs.join(",")} asked of ${who} ${src.info.id}`);
      this.send(src, { kind: "request", seqs });
    }
  }

  private status(): Status {
    const n = this.opts.nSubstreams;
    const depth: number[] = [];
    const root: bigint[] = [];
    const parent: bigint[] = [];
    for (let s = 0; s < n; s++) {
      const p = this.parentOf(s);
      const fed = p?.hello && p.delivered & (1n << BigInt(s));
      depth.push(fed ? this.depth(s) : 255);
      parent.push(fed ? (p.hello as Hello).peerId : NONE);
      root.push(this.rootOf(s));
    }
    const children = [...this.links.values()].filter((l) => l.children !== 0n).length;
    return {
      freeSlots: Math.max(0, this.slots() - this.childSubstreams()),
      children,
      minChildKbps: 0,
      busyMs: 0,
      segmentStart: this.segmentStart,
      depth,
      latencyMs: new Array(n).fill(65535),
      root,
      parent,
    };
  }

  private send(link: Link, msg: Message): void {
    try {
      link.transport.send(msg);
      this.stats.bytesSent += msg.kind === "piece" ? msg.piece.wire.length : 0;
    } catch (e) {
      this.opts.log?.(`send to ${link.info.id} failed: ${e}`);
    }
  }

  private goodbye(link: Link, reason: Goodbye, why: string): void {
    if (reason === Goodbye.Malformed) this.stats.malformed += 1;
    this.opts.log?.(`goodbye ${Goodbye[reason]} to ${link.info.id}: ${why}`);
    this.send(link, { kind: "goodbye", reason });
    this.links.delete(link.info.id);
    this.opts.onClose?.(link.info.id, why);
    if (link.pushes !== 0n) this.chooseParents();
  }
}
