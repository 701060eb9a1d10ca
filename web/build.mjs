// Builds what a seeder serves for browsers: the watch page's player, bundled with
// hls.js into one minified file, and the script for sites with their own hls.js, into
// seeder/assets/ (committed: the seeder embeds them,
// so `cargo build` needs no Node). `node build.mjs OUTDIR` builds into OUTDIR instead
// (the check that the committed file matches its sources does that).
import { build } from "esbuild";

const outdir = process.argv[2] ?? new URL("../seeder/assets/", import.meta.url).pathname;
await build({
  entryPoints: {
    watch: new URL("watch/watch.ts", import.meta.url).pathname,
    // For sites with their own hls.js (not bundled: the site brings it).
    "shoal-hls": new URL("watch/embed.ts", import.meta.url).pathname,
  },
  bundle: true,
  minify: true,
  format: "iife",
  target: "es2020",
  legalComments: "none",
  outdir,
  logLevel: "warning",
});
