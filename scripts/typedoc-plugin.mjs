// A typedoc plugin for the API docs site (typedoc.json loads it).
//
// Headings with code in them ("## Metrics (`src/metrics/`)") lose the code in typedoc's
// "On This Page" list and in their anchors, because typedoc takes a heading's text from its
// plain-text parts only: the list showed "Metrics ()" and the anchor was "#metrics-". This
// rewrites a heading's code spans as <code> HTML around a text part, so the code still renders
// as code, and the list and the anchor ("#metrics-srcmetrics", as GitHub makes it) keep it.

/** @param {import("typedoc").Application} app */
export function load(app) {
  // Set once the options are read (reading them resets what a plugin set at load time).
  app.on("bootstrapEnd", () => app.options.setValue("markdownItLoader", headingCode));
}

/** @param {any} md the markdown-it instance typedoc renders with */
function headingCode(md) {
  md.core.ruler.push("ts-vmm-heading-code", (/** @type {any} */ state) => {
    const tokens = state.tokens;
    for (let i = 0; i + 1 < tokens.length; i++) {
      if (tokens[i].type !== "heading_open" || tokens[i + 1].type !== "inline") continue;
      const inline = tokens[i + 1];
      inline.children = (inline.children ?? []).flatMap((/** @type {any} */ t) => {
        if (t.type !== "code_inline") return [t];
        const open = new state.Token("html_inline", "", 0);
        open.content = "<code>";
        const text = new state.Token("text", "", 0);
        text.content = t.content;
        const close = new state.Token("html_inline", "", 0);
        close.content = "</code>";
        return [open, text, close];
      });
    }
  });
}
