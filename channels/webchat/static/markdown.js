// A small, safe Markdown renderer for chat text (model output and user input alike).
//
// Safety by construction: the text never reaches innerHTML. Every node is made with
// createElement / createTextNode, so "<img onerror=...>" or "<script>" in the text
// is shown as those characters. Links are made only for http:, https: and mailto:
// URLs (parsed with URL, so "java\tscript:" and the like are refused) and open in a
// new tab without referrer or opener.
//
// Subset: fenced code blocks (with a copy button), `inline code`, **bold**, *italic*,
// _italic_, [links](https://...), bare https:// URLs, # headings, - and 1. lists,
// > quotes, paragraphs and line breaks.
"use strict";

(function () {
  const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);

  function safeUrl(raw) {
    let url;
    try {
      url = new URL(raw);
    } catch (_error) {
      return null; // relative or malformed: not a link
    }
    return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
  }

  function el(tag, className) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    return node;
  }

  // Inline patterns, tried in order at each position (sticky regexes).
  const INLINE = [
    { re: /`([^`\n]+)`/y, make: (m) => codeSpan(m[1]) },
    { re: /\[([^\]\n]+)\]\(([^()\s]+)\)/y, make: (m) => link(m[1], m[2], m[0]) },
    { re: /\*\*([^*\n]+?)\*\*/y, make: (m) => wrap("strong", m[1]) },
    { re: /__([^_\n]+?)__/y, make: (m) => wrap("strong", m[1]) },
    { re: /\*([^*\s][^*\n]*?)\*/y, make: (m) => wrap("em", m[1]) },
    { re: /_([^_\s][^_\n]*?)_(?![A-Za-z0-9])/y, make: (m) => wrap("em", m[1]), word: true },
    { re: /(?:https?:\/\/|mailto:)[^\s<>()]+[^\s<>().,;:!?'"]/y, make: (m) => link(m[0], m[0], m[0]) },
  ];

  function codeSpan(text) {
    const code = el("code");
    code.textContent = text;
    return code;
  }

  function wrap(tag, text) {
    const node = el(tag);
    node.appendChild(inline(text));
    return node;
  }

  function link(label, target, whole) {
    const href = safeUrl(target);
    if (href === null) return document.createTextNode(whole);
    const a = el("a");
    a.href = href;
    a.target = "_blank";
    a.rel = "noopener noreferrer nofollow";
    a.textContent = label;
    return a;
  }

  function inline(text) {
    const out = document.createDocumentFragment();
    let plain = "";
    let i = 0;
    while (i < text.length) {
      let matched = null;
      for (const rule of INLINE) {
        // An underscore inside a word (snake_case) is not emphasis.
        if (rule.word && i > 0 && /[A-Za-z0-9]/.test(text[i - 1])) continue;
        rule.re.lastIndex = i;
        const m = rule.re.exec(text);
        if (m) {
          matched = [m, rule];
          break;
        }
      }
      if (!matched) {
        plain += text[i];
        i += 1;
        continue;
      }
      const [m, rule] = matched;
      if (plain) out.appendChild(document.createTextNode(plain));
      plain = "";
      out.appendChild(rule.make(m));
      i += m[0].length;
    }
    if (plain) out.appendChild(document.createTextNode(plain));
    return out;
  }

  function inlineLines(lines) {
    const out = document.createDocumentFragment();
    lines.forEach((line, index) => {
      if (index > 0) out.appendChild(el("br"));
      out.appendChild(inline(line));
    });
    return out;
  }

  function codeBlock(lang, lines) {
    const box = el("div", "code-block");
    const bar = el("div", "code-bar");
    const label = el("span", "code-lang");
    label.textContent = lang || "code";
    const copy = el("button", "copy");
    copy.type = "button";
    copy.textContent = "Copy";
    copy.setAttribute("aria-label", "Copy code");
    const pre = el("pre");
    const code = el("code");
    code.textContent = lines.join("\n");
    copy.addEventListener("click", () => copyText(code.textContent, copy));
    bar.append(label, copy);
    pre.appendChild(code);
    box.append(bar, pre);
    return box;
  }

  function copyText(text, button) {
    const done = () => {
      button.textContent = "Copied";
      setTimeout(() => (button.textContent = "Copy"), 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, () => fallbackCopy(text, done));
    } else {
      fallbackCopy(text, done);
    }
  }

  function fallbackCopy(text, done) {
    const area = el("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    try {
      if (document.execCommand("copy")) done();
    } finally {
      area.remove();
    }
  }

  const FENCE = /^\s{0,3}(```|~~~)\s*([\w+#.-]*)\s*$/;
  const HEADING = /^(#{1,6})\s+(.*)$/;
  const BULLET = /^\s*[-*+]\s+(.*)$/;
  const NUMBERED = /^\s*\d{1,9}[.)]\s+(.*)$/;
  const QUOTE = /^\s{0,3}>\s?(.*)$/;

  function list(lines, start, pattern, tag) {
    const node = el(tag);
    let i = start;
    while (i < lines.length) {
      const m = pattern.exec(lines[i]);
      if (!m) break;
      const item = el("li");
      item.appendChild(inline(m[1]));
      node.appendChild(item);
      i += 1;
    }
    return [node, i];
  }

  function render(text) {
    const out = document.createDocumentFragment();
    const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      const fence = FENCE.exec(line);
      if (fence) {
        const body = [];
        i += 1;
        // An unclosed fence (a reply still streaming) runs to the end of the text.
        while (i < lines.length && !lines[i].trim().startsWith(fence[1])) {
          body.push(lines[i]);
          i += 1;
        }
        i += 1;
        out.appendChild(codeBlock(fence[2], body));
        continue;
      }
      if (!line.trim()) {
        i += 1;
        continue;
      }
      const heading = HEADING.exec(line);
      if (heading) {
        const node = el(`h${Math.min(6, heading[1].length + 2)}`);
        node.appendChild(inline(heading[2]));
        out.appendChild(node);
        i += 1;
        continue;
      }
      if (BULLET.test(line)) {
        const [node, next] = list(lines, i, BULLET, "ul");
        out.appendChild(node);
        i = next;
        continue;
      }
      if (NUMBERED.test(line)) {
        const [node, next] = list(lines, i, NUMBERED, "ol");
        out.appendChild(node);
        i = next;
        continue;
      }
      if (QUOTE.test(line)) {
        const quoted = [];
        while (i < lines.length && QUOTE.test(lines[i])) {
          quoted.push(QUOTE.exec(lines[i])[1]);
          i += 1;
        }
        const node = el("blockquote");
        node.appendChild(inlineLines(quoted));
        out.appendChild(node);
        continue;
      }
      const para = [];
      while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) {
        para.push(lines[i]);
        i += 1;
      }
      const p = el("p");
      p.appendChild(inlineLines(para));
      out.appendChild(p);
    }
    return out;
  }

  function startsBlock(line) {
    return (
      FENCE.test(line) || HEADING.test(line) || BULLET.test(line) ||
      NUMBERED.test(line) || QUOTE.test(line)
    );
  }

  window.renderMarkdown = render;
  window.safeUrl = safeUrl;
})();
