// hls.js fed by the swarm: the seeder's LL-HLS playlist is the clock (small text,
// fetched as usual), and each part or segment it lists is answered from the verified
// pieces the page's peer holds — a part is one piece's payload, a segment its pieces
// back to back (#EXT-X-SHOAL-PIECES in the playlist says which). What the swarm has not
// brought in time is fetched from the seeder over HTTP, as any HLS player would.

import type {
  FragmentLoaderConstructor,
  Loader,
  LoaderCallbacks,
  LoaderConfiguration,
  LoaderContext,
  LoaderStats,
  PlaylistLoaderConstructor,
} from "hls.js";

import { Flags, type Piece } from "./piece.js";

/** The pieces of a part or segment. */
export interface Span {
  seqs: bigint[];
  /**
   * The hinted part of the open segment: it may end early, at the next segment start
   * (a piece flagged SEGMENT_START after its first).
   */
  open: boolean;
}

/** Where a playlist says a part's or a segment's bytes are. */
export class PieceMap {
  private readonly byUrl = new Map<string, { first: bigint; count: number; open: boolean }>();

  /** Reads a media playlist fetched from `url`: each part and complete segment's pieces. */
  ingest(url: string, text: string): void {
    let first: bigint | null = null;
    let count: number | null = null;
    let per = 1;
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (line.startsWith("#EXT-X-SHOAL-PIECES:")) {
        const attrs = new Map(
          line
            .slice(20)
            .split(",")
            .map((kv) => kv.split("=") as [string, string]),
        );
        first = /^\d+$/.test(attrs.get("FIRST") ?? "") ? BigInt(attrs.get("FIRST") as string) : null;
        const c = attrs.get("COUNT");
        count = c !== undefined && /^\d+$/.test(c) ? Number(c) : null;
        const p = attrs.get("PART");
        per = p !== undefined && /^\d+$/.test(p) && Number(p) > 0 ? Number(p) : 1;
      } else if (first !== null && (line.startsWith("#EXT-X-PART:") || line.startsWith("#EXT-X-PRELOAD-HINT:"))) {
        const uri = /URI="([^"]+)"/.exec(line)?.[1];
        const k = uri ? /(\d+)\.(\d+)\.ts$/.exec(uri)?.[2] : undefined;
        if (uri && k !== undefined) {
          const at = Number(k) * per;
          // A complete segment's last part has what is left; an open segment lists whole parts.
          const n = count === null ? per : Math.max(0, Math.min(per, count - at));
          const hinted = line.startsWith("#EXT-X-PRELOAD-HINT:");
          this.byUrl.set(new URL(uri, url).href, { first: first + BigInt(at), count: n, open: hinted });
        }
      } else if (first !== null && line !== "" && !line.startsWith("#")) {
        if (count !== null) this.byUrl.set(new URL(line, url).href, { first, count, open: false });
        first = null;
        count = null;
      }
    }
    // Keep the map from growing without end: a playlist lists a minute at most.
    if (this.byUrl.size > 20_000) {
      const keep = [...this.byUrl].slice(-10_000);
      this.byUrl.clear();
      for (const [k, v] of keep) this.byUrl.set(k, v);
    }
  }

  /** The pieces a part or segment URL is made of, if a playlist said. */
  pieces(url: string): Span | null {
    const at = this.byUrl.get(url);
    if (!at || at.count === 0) return null;
    return { seqs: Array.from({ length: at.count }, (_, i) => at.first + BigInt(i)), open: at.open };
  }
}

/** What the loader needs of the page's peer. */
export interface Swarm {
  piece(seq: bigint): Piece | undefined;
  /** The newest piece known to exist. */
  newest(): bigint | null;
  /** The first piece it got: what came before it joined, it will not have. */
  first(): bigint | null;
  /** Calls `fn` at every new verified piece; returns the unsubscribe. */
  onPiece(fn: () => void): () => void;
}

/** What became of each media request. */
export interface LoadReport {
  /** Answered from the swarm: these pieces. */
  swarm(seqs: bigint[], bytes: number): void;
  /** Fetched over HTTP (`url`: the part or segment). */
  http(bytes: number, url: string): void;
}

/** A piece that is known to exist (a later one does) is fetched over HTTP after this. */
export const SWARM_WAIT_MS = 800;
/** And one not known to exist yet (the part the playlist hints) after this. */
export const SWARM_WAIT_AHEAD_MS = 2_000;

function emptyStats(): LoaderStats {
  const t = () => ({ start: 0, first: 0, end: 0 });
  return {
    aborted: false,
    loaded: 0,
    retry: 0,
    total: 0,
    chunkCount: 0,
    bwEstimate: 0,
    loading: t(),
    parsing: { start: 0, end: 0 },
    buffering: t(),
  };
}

type LoaderClass = new (config: object) => Loader<LoaderContext>;

/** Playlist and fragment loaders over `Base` (hls.js's own) that use the swarm. */
export function swarmLoaders(Base: LoaderClass, map: PieceMap, swarm: Swarm, report: LoadReport) {
  class PlaylistLoader extends Base {
    load(context: LoaderContext, config: LoaderConfiguration, callbacks: LoaderCallbacks<LoaderContext>): void {
      super.load(context, config, {
        ...callbacks,
        onSuccess: (response, stats, ctx, details) => {
          if (typeof response.data === "string") map.ingest(response.url || ctx.url, response.data);
          callbacks.onSuccess(response, stats, ctx, details);
        },
      });
    }
  }

  class FragmentLoader implements Loader<LoaderContext> {
    context: LoaderContext | null = null;
    stats: LoaderStats = emptyStats();
    private readonly http: Loader<LoaderContext>;
    private waiting: (() => void) | null = null;

    constructor(config: object) {
      this.http = new Base(config);
    }

    load(context: LoaderContext, config: LoaderConfiguration, callbacks: LoaderCallbacks<LoaderContext>): void {
      this.context = context;
      const span = map.pieces(context.url);
      if (span === null) return this.fetch(context, config, callbacks);
      const start = performance.now();
      this.stats = emptyStats();
      this.stats.loading.start = start;
      let seqs = span.seqs;
      const attempt = (): boolean => {
        const pieces: Piece[] = [];
        for (const [j, seq] of seqs.entries()) {
          const p = swarm.piece(seq);
          if (p === undefined) return false;
          // The hinted part ends where the next segment starts.
          if (span.open && j > 0 && (p.flags & Flags.SEGMENT_START) !== 0) {
            seqs = seqs.slice(0, j);
            break;
          }
          pieces.push(p);
        }
        this.stop();
        const total = pieces.reduce((n, p) => n + p.payload.length, 0);
        const data = new Uint8Array(total);
        let at = 0;
        for (const p of pieces) {
          data.set(p.payload, at);
          at += p.payload.length;
        }
        const now = performance.now();
        Object.assign(this.stats, { loaded: total, total, chunkCount: 1 });
        this.stats.loading.first = now;
        this.stats.loading.end = now;
        report.swarm(seqs, total);
        callbacks.onSuccess({ url: context.url, data: data.buffer }, this.stats, context, null);
        return true;
      };
      if (attempt()) return;
      // From before the page joined (its start segment): not coming, ask HTTP now.
      const first = swarm.first();
      if (first === null || seqs[0] < first) return this.fetch(context, config, callbacks);
      const last = seqs[seqs.length - 1];
      const unsubscribe = swarm.onPiece(() => void attempt());
      const timer = setInterval(() => {
        const waited = performance.now() - start;
        const exists = (swarm.newest() ?? -1n) > last;
        if (waited >= SWARM_WAIT_AHEAD_MS || (exists && waited >= SWARM_WAIT_MS)) {
          this.stop();
          this.fetch(context, config, callbacks);
        }
      }, 50);
      this.waiting = () => {
        unsubscribe();
        clearInterval(timer);
      };
    }

    private fetch(context: LoaderContext, config: LoaderConfiguration, callbacks: LoaderCallbacks<LoaderContext>): void {
      this.http.load(context, config, {
        ...callbacks,
        onSuccess: (response, stats, ctx, details) => {
          this.stats = stats;
          const data = response.data;
          report.http(data instanceof ArrayBuffer ? data.byteLength : 0, ctx.url);
          callbacks.onSuccess(response, stats, ctx, details);
        },
      });
      this.stats = this.http.stats;
    }

    private stop(): void {
      this.waiting?.();
      this.waiting = null;
    }

    abort(): void {
      this.stop();
      this.stats.aborted = true;
      this.http.abort();
    }

    destroy(): void {
      this.stop();
      this.http.destroy();
    }
  }

  // hls.js's constructor types name its context subtypes; these loaders take any context.
  return {
    pLoader: PlaylistLoader as unknown as PlaylistLoaderConstructor,
    fLoader: FragmentLoader as unknown as FragmentLoaderConstructor,
  };
}
