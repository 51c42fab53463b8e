// Renders the page's markdown in the browser; prerender.js runs the same code in node.
import { marked } from "marked";

export const SOURCE = "# Hello from kiln\n\nThis page was *bundled* by esbuild and is served by nginx.\n";

export function render() {
  return marked.parse(SOURCE);
}

if (typeof document !== "undefined") {
  document.getElementById("app").innerHTML = render();
} else {
  globalThis.kilnRender = render;
}
