// A page's side of the WebSocket tracker (PROTOCOL.md §6.1, the WebTorrent protocol):
// announce a channel with WebRTC offers, answer the offers other pages send, and hand
// each data channel that opens to the caller. Offers are complete (ICE gathered before
// they are sent): the tracker relays one message each way, no trickle.

/** 20 bytes as a WebTorrent "binary string" (one character per byte). */
export function binaryString(b: Uint8Array): string {
  return String.fromCharCode(...b);
}

export interface TrackerOptions {
  /** `ws://host:port/announce`. */
  url: string;
  infoHash: Uint8Array;
  /** 20 bytes. */
  peerId: Uint8Array;
  /** ICE servers (none on a LAN or loopback; the seeders answer STUN). */
  iceServers?: RTCIceServer[];
  /** Whether to take up an offer or answer from this page (false: a banned one). */
  admits?: (remotePeerId: string) => boolean;
  /** A data channel to another page is open. */
  onChannel: (channel: RTCDataChannel, remotePeerId: string) => void;
  /** The tracker answered an announce: pages in the channel. */
  onAnnounced?: (pages: number) => void;
  /** What the tracker refused, or a connection lost. */
  onError?: (why: string) => void;
}

const OFFERS = 5;
const ICE_WAIT_MS = 5_000;

function randomId(): string {
  return binaryString(crypto.getRandomValues(new Uint8Array(20)));
}

/** Waits until `pc` has gathered its ICE candidates (or 5 s passed). */
function gathered(pc: RTCPeerConnection): Promise<void> {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((done) => {
    const timer = setTimeout(done, ICE_WAIT_MS);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        done();
      }
    });
  });
}

export class TrackerClient {
  private ws: WebSocket;
  /** Our offers waiting for an answer, by offer id. */
  private readonly pending = new Map<string, { pc: RTCPeerConnection; channel: RTCDataChannel }>();
  /**
   * Remotes we hold an open data channel with, and how many: an offer or answer from
   * one is not taken up (the tracker hands offers to random peers, often to one we
   * are linked to already; the link would only be refused as a duplicate at Hello).
   */
  private readonly open = new Map<string, number>();
  private readonly hash: string;
  private readonly me: string;

  constructor(private readonly opts: TrackerOptions) {
    this.hash = binaryString(opts.infoHash);
    this.me = binaryString(opts.peerId);
    this.ws = new WebSocket(opts.url);
    this.ws.addEventListener("message", (e) => void this.onMessage(String(e.data)));
    this.ws.addEventListener("close", (e) => opts.onError?.(`tracker closed: ${e.code} ${e.reason}`));
  }

  private connection(): RTCPeerConnection {
    return new RTCPeerConnection({ iceServers: this.opts.iceServers ?? [] });
  }

  private send(msg: object): void {
    this.ws.send(JSON.stringify(msg));
  }

  /**
   * Announces with `offers` new offers (each a data channel waiting for an answer);
   * `wantSeed` asks the tracker to give the first to a seeder (Shoal's field).
   */
  async announce(offers = OFFERS, wantSeed = false): Promise<void> {
    if (this.ws.readyState === WebSocket.CONNECTING) {
      await new Promise((ok) => this.ws.addEventListener("open", ok, { once: true }));
    }
    const made = await Promise.all(
      Array.from({ length: offers }, async () => {
        const pc = this.connection();
        const channel = pc.createDataChannel("shoal");
        await pc.setLocalDescription(await pc.createOffer());
        await gathered(pc);
        const offerId = randomId();
        this.pending.set(offerId, { pc, channel });
        return { offer: { type: "offer", sdp: pc.localDescription?.sdp }, offer_id: offerId };
      }),
    );
    const msg = { action: "announce", info_hash: this.hash, peer_id: this.me, numwant: offers, offers: made };
    this.send(wantSeed ? { ...msg, want_seed: true } : msg);
  }

  /**
   * Tells the tracker what this page watched in the current UTC hour, seconds (and of
   * those, during ad breaks): Shoal's `watched` and `ad_watched`, metered as a native
   * viewer's announce is; early in an hour also the last hour's final counts
   * (`watched_prev`, `ad_watched_prev`), so that hour is billed to its end. `bytes`:
   * what the page sent and took in since it joined (`uploaded`, `downloaded`); the
   * tracker sets the bytes against the watching (watching without taking the stream in
   * is flagged as an anomaly on the bill).
   */
  async report(
    watched: number,
    adWatched: number,
    previous: [number, number] | null = null,
    bytes: { uploaded: number; downloaded: number } | null = null,
  ): Promise<void> {
    if (this.ws.readyState === WebSocket.CONNECTING) {
      await new Promise((ok) => this.ws.addEventListener("open", ok, { once: true }));
    }
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.send({
      action: "announce",
      info_hash: this.hash,
      peer_id: this.me,
      numwant: 0,
      offers: [],
      watched: Math.floor(watched),
      ad_watched: Math.floor(adWatched),
      ...(previous ? { watched_prev: Math.floor(previous[0]), ad_watched_prev: Math.floor(previous[1]) } : {}),
      ...(bytes ? { uploaded: Math.floor(bytes.uploaded), downloaded: Math.floor(bytes.downloaded) } : {}),
    });
  }

  private async onMessage(text: string): Promise<void> {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(text);
    } catch {
      return this.opts.onError?.("tracker sent something other than JSON");
    }
    if (typeof msg["failure reason"] === "string") return this.opts.onError?.(msg["failure reason"] as string);
    if (typeof msg.interval === "number") return this.opts.onAnnounced?.(Number(msg.incomplete) || 0);
    const from = msg.peer_id as string | undefined;
    const offerId = msg.offer_id as string | undefined;
    if (from === undefined || offerId === undefined || from === this.me) return;
    const offer = msg.offer as RTCSessionDescriptionInit | undefined;
    const answer = msg.answer as RTCSessionDescriptionInit | undefined;
    if (this.opts.admits?.(from) === false) {
      // Nothing more of it: our own offer it answers is dropped too.
      this.pending.get(offerId)?.pc.close();
      this.pending.delete(offerId);
      return;
    }
    if (offer) {
      if (this.open.has(from)) return;
      const pc = this.connection();
      pc.addEventListener("datachannel", (e) => {
        e.channel.addEventListener("open", () => this.opened(e.channel, from), { once: true });
      });
      await pc.setRemoteDescription(offer);
      await pc.setLocalDescription(await pc.createAnswer());
      await gathered(pc);
      this.send({
        action: "announce",
        info_hash: this.hash,
        peer_id: this.me,
        to_peer_id: from,
        offer_id: offerId,
        answer: { type: "answer", sdp: pc.localDescription?.sdp },
      });
    } else if (answer) {
      const mine = this.pending.get(offerId);
      if (!mine) return;
      this.pending.delete(offerId);
      if (this.open.has(from)) return mine.pc.close();
      // It cannot open before the answer is applied: listening now misses nothing.
      mine.channel.addEventListener("open", () => this.opened(mine.channel, from), { once: true });
      await mine.pc.setRemoteDescription(answer);
    }
  }

  private opened(channel: RTCDataChannel, from: string): void {
    this.open.set(from, (this.open.get(from) ?? 0) + 1);
    channel.addEventListener(
      "close",
      () => {
        const n = (this.open.get(from) ?? 1) - 1;
        if (n > 0) this.open.set(from, n);
        else this.open.delete(from);
      },
      { once: true },
    );
    this.opts.onChannel(channel, from);
  }

  close(): void {
    this.ws.close();
    for (const { pc } of this.pending.values()) pc.close();
  }
}
