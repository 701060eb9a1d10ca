// The playlist's piece map: which pieces answer a part, a hinted part, a segment.

import assert from "node:assert/strict";
import { test } from "node:test";

import { PieceMap } from "../src/loader.js";

const playlist = `#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:1
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PROGRAM-DATE-TIME:2026-12-03T07:00:00.000Z
#EXT-X-SHOAL-PIECES:FIRST=1000,COUNT=20
#EXTINF:1.000,
0.ts
#EXT-X-SHOAL-PIECES:FIRST=1020,COUNT=20
#EXT-X-PART:DURATION=0.050,URI="1.0.ts",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.050,URI="1.1.ts"
#EXTINF:1.000,
1.ts
#EXT-X-SHOAL-PIECES:FIRST=1040
#EXT-X-PART:DURATION=0.050,URI="2.0.ts",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="2.1.ts"
`;

test("a playlist's parts, hinted part and complete segments map to their pieces", () => {
  const map = new PieceMap();
  const base = "http://seeder:8730/hls/demo/";
  map.ingest(`${base}live.m3u8?_HLS_msn=2&_HLS_part=1`, playlist);
  assert.deepEqual(map.pieces(`${base}1.1.ts`), [1021n]);
  assert.deepEqual(map.pieces(`${base}2.0.ts`), [1040n]);
  assert.deepEqual(map.pieces(`${base}2.1.ts`), [1041n], "the hinted part is the next piece");
  const seg = map.pieces(`${base}0.ts`);
  assert.equal(seg?.length, 20);
  assert.deepEqual([seg?.[0], seg?.[19]], [1000n, 1019n]);
  assert.equal(map.pieces(`${base}9.ts`), null, "not listed: fetched over HTTP");
  // A playlist without Shoal's tag (another server) maps nothing.
  const other = new PieceMap();
  other.ingest(`${base}live.m3u8`, playlist.replace(/#EXT-X-SHOAL-PIECES[^\n]*\n/g, ""));
  assert.equal(other.pieces(`${base}1.1.ts`), null);
});
