// Policy docs are markdown written by whoever published the policy: render
// them, then keep only harmless HTML.
import { marked } from "marked";
import DOMPurify from "dompurify";

export function renderMarkdown(md: string): string {
  return DOMPurify.sanitize(marked.parse(md, { async: false }) as string);
}
