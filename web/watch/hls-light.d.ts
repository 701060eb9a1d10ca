// hls.js's light build (no subtitles, no DRM) has the main build's types.
declare module "hls.js/light" {
  import Hls from "hls.js";
  export default Hls;
}
