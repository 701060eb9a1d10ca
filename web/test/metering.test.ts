// The page's meter, driven by hand: seconds played in each UTC hour (a paused or
// stalled player counts none), ad seconds inside breaks, and the previous hour's final
// counts told for the first ten minutes of the next.

import assert from "node:assert/strict";
import { test } from "node:test";

import { HourMeter } from "../src/metering.js";

const H = 3_600_000;
const T0 = 490_000 * H; // an hour's start

test("a page meters the seconds it played in each hour and tells the last hour's tail", () => {
  const m = new HourMeter();
  // The last 100 s of an hour: 60 s playing, 10 s paused, 10 s stalled (media time
  // stands), then 20 s playing inside an ad break.
  let media = 0;
  for (let s = 0; s < 100; s++) {
    const paused = s >= 60 && s < 70;
    const stalled = s >= 70 && s < 80;
    if (!paused && !stalled) media += 1;
    m.inAd = s >= 80;
    m.tick(T0 - 100_000 + s * 1_000, paused, media);
  }
  assert.deepEqual(m.counts(T0 - 1_000), { watched: 80, ad: 20, prev: null });
  // Into the next hour: its own counts start at 0, and the last hour's final ones are
  // told for ten minutes.
  m.inAd = false;
  for (let s = 0; s < 30; s++) m.tick(T0 + s * 1_000, false, (media += 1));
  assert.deepEqual(m.counts(T0 + 29_000), { watched: 30, ad: 0, prev: [80, 20] });
  assert.deepEqual(m.counts(T0 + 599_000).prev, [80, 20]);
  assert.equal(m.counts(T0 + 600_000).prev, null, "not after ten minutes");
});

test("an hour slept through, or one with nothing played, has no tail to tell", () => {
  const m = new HourMeter();
  m.tick(T0 - 2_000, false, 1);
  m.tick(T0 - 1_000, false, 2);
  assert.equal(m.counts(T0 - 1_000).watched, 2);
  // The page's timers stood still for more than an hour (a laptop asleep).
  m.tick(T0 + H + 5_000, false, 3);
  assert.deepEqual(m.counts(T0 + H + 5_000), { watched: 1, ad: 0, prev: null });
  // Paused all through the next hour's turn: nothing watched, no tail.
  const p = new HourMeter();
  p.tick(T0 - 1_000, true, 0);
  p.tick(T0 + 1_000, true, 0);
  assert.equal(p.counts(T0 + 1_000).prev, null);
});
