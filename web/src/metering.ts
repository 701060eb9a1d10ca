// What a page played in each UTC hour, as the tracker meters it (swarm/PROTOCOL.md §6):
// `watched` and `ad_watched`, seconds played in the hour (of those, inside ad breaks),
// and, for the first ten minutes of an hour, the previous hour's final counts
// (`watched_prev`, `ad_watched_prev`) so that hour is billed to its end.

/** How long into an hour the last hour's final counts are told too. */
export const PREVIOUS_FOR_MS = 600_000;

export interface HourCounts {
  watched: number;
  ad: number;
  /** The previous hour's final [watched, ad], while it is told. */
  prev: [number, number] | null;
}

export class HourMeter {
  private hour = -1;
  private watched = 0;
  private ad = 0;
  private prev: [number, number] | null = null;
  private lastTime = -1;
  /** Inside an ad break: set from the ad flags of the pieces last handed to the player. */
  inAd = false;

  /**
   * Called once a second: the second counts if the player is not paused and its media
   * time moved since the last call (a stalled player watches nothing).
   */
  tick(nowMs: number, paused: boolean, mediaTime: number): void {
    const hour = Math.floor(nowMs / 3_600_000);
    if (hour !== this.hour) {
      // An hour the page slept through has no final counts to tell.
      this.prev = hour === this.hour + 1 && this.watched > 0 ? [this.watched, this.ad] : null;
      this.hour = hour;
      this.watched = 0;
      this.ad = 0;
    }
    const playing = !paused && mediaTime !== this.lastTime;
    this.lastTime = mediaTime;
    if (playing) {
      this.watched += 1;
      if (this.inAd) this.ad += 1;
    }
  }

  /** What to announce at `nowMs`. */
  counts(nowMs: number): HourCounts {
    const prev = nowMs % 3_600_000 < PREVIOUS_FOR_MS ? this.prev : null;
    return { watched: this.watched, ad: this.ad, prev };
  }
}
