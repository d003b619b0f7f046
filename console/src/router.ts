// Routing by URL fragment (#/proxies/demo/keys): admin serves only `/`
// and the hashed assets, so no server-side fallback is needed and the
// API's 404s stay JSON.
import { useEffect, useState } from "react";

export function useRoute(): string[] {
  const parse = () =>
    location.hash
      .replace(/^#\/?/, "")
      .split("?")[0]
      .split("/")
      .filter(Boolean)
      .map(decodeURIComponent);
  const [parts, setParts] = useState(parse);
  useEffect(() => {
    const f = () => setParts(parse());
    window.addEventListener("hashchange", f);
    return () => window.removeEventListener("hashchange", f);
  }, []);
  return parts;
}

export const href = (...parts: string[]) => "#/" + parts.map(encodeURIComponent).join("/");
export const go = (...parts: string[]) => {
  location.hash = href(...parts);
};
