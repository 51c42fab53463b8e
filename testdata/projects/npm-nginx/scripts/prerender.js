// Runs the bundle in node (no DOM) and writes the rendered HTML next to it, so
// the build fails if the bundle does not work.
const fs = require("fs");
require("../dist/app.js");
const html = globalThis.kilnRender();
if (!html.includes("<h1>Hello from kiln</h1>")) {
  throw new Error("unexpected render: " + html);
}
fs.writeFileSync("dist/prerendered.html", html);
console.log("prerendered", html.length, "bytes");
