// The playlist's piece map: which pieces answer a part, a hinted part, a segment.

import assert from "node:assert/strict";
import { test } from "node:test";

import { PieceMap } from "../src/loader.js";

const playlist = `#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:1
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PROGRAM-DATE-TIME:2026-12-03T07:00:00.000Z
#EXT-X-SHOAL-PIECES:FIRST=1000,COUNT=20,PART=4
#EXTINF:1.000,
0.ts
#EXT-X-SHOAL-PIECES:FIRST=1020,COUNT=22,PART=4
#EXT-X-PART:DURATION=0.200,URI="1.0.ts",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.200,URI="1.1.ts"
#EXT-X-PART:DURATION=0.200,URI="1.2.ts"
#EXT-X-PART:DURATION=0.200,URI="1.3.ts"
#EXT-X-PART:DURATION=0.200,URI="1.4.ts"
#EXT-X-PART:DURATION=0.100,URI="1.5.ts"
#EXTINF:1.100,
1.ts
#EXT-X-SHOAL-PIECES:FIRST=1042,PART=4
#EXT-X-PART:DURATION=0.200,URI="2.0.ts",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="2.1.ts"
`;

test("a playlist's parts, hinted part and complete segments map to their pieces", () => {
  const map = new PieceMap();
  const base = "http://seeder:8730/hls/demo/";
  map.ingest(`${base}live.m3u8?_HLS_msn=2&_HLS_part=1`, playlist);
  const seqs = (u: string) => map.pieces(`${base}${u}`)?.seqs;
  assert.deepEqual(seqs("1.1.ts"), [1024n, 1025n, 1026n, 1027n], "a part is four pieces");
  assert.deepEqual(seqs("1.5.ts"), [1040n, 1041n], "a segment's last part, what is left");
  assert.deepEqual(seqs("2.0.ts"), [1042n, 1043n, 1044n, 1045n]);
  assert.deepEqual(map.pieces(`${base}2.1.ts`), { seqs: [1046n, 1047n, 1048n, 1049n], open: true }, "the hinted part");
  assert.equal(map.pieces(`${base}2.0.ts`)?.open, false);
  const seg = seqs("0.ts");
  assert.equal(seg?.length, 20);
  assert.deepEqual([seg?.[0], seg?.[19]], [1000n, 1019n]);
  assert.equal(map.pieces(`${base}9.ts`), null, "not listed: fetched over HTTP");
  // A playlist without Shoal's tag (another server) maps nothing.
  const other = new PieceMap();
  other.ingest(`${base}live.m3u8`, playlist.replace(/#EXT-X-SHOAL-PIECES[^\n]*\n/g, ""));
  assert.equal(other.pieces(`${base}1.1.ts`), null);
});
