// The shell: sign-in, the sidebar and the page the fragment names. What
// the signed-in role may not do is not shown at all (a developer sees no
// providers, gateway registration, tokens or audit log).
import { createContext, useContext, useEffect, useState } from "react";
import { ApiError, Me, api, session, setUnauthorizedHandler } from "./api";
import { useRoute } from "./router";
import { Field, Alert, toApiError } from "./ui";
import { Providers } from "./pages/Providers";
import { Proxies, NewProxy } from "./pages/Proxies";
import { ProxyPage } from "./pages/Proxy";
import { Catalogue } from "./pages/Catalogue";
import { Gateways } from "./pages/Gateways";
import { Usage } from "./pages/Usage";
import { Audit } from "./pages/Audit";
import { Applications, ApplicationPage } from "./pages/Applications";

const MeContext = createContext<Me | null>(null);
export const useMe = () => useContext(MeContext)!;
export const isAdmin = (me: Me) => me.role === "admin";

export function App() {
  const [me, setMe] = useState<Me | null>(null);
  const [checking, setChecking] = useState(!!session.get());
  const [expired, setExpired] = useState(false);

  useEffect(() => {
    setUnauthorizedHandler(() => {
      session.clear();
      setMe(null);
      setExpired(true);
    });
    if (session.get()) {
      api<Me>("GET", "/me")
        .then(setMe)
        .catch(() => session.clear())
        .finally(() => setChecking(false));
    }
  }, []);

  if (checking) return <p className="muted center">Checking your session…</p>;
  if (!me)
    return (
      <SignIn
        expired={expired}
        onSignedIn={(token, who) => {
          session.set(token);
          setExpired(false);
          setMe(who);
        }}
      />
    );
  return (
    <MeContext.Provider value={me}>
      <Shell
        onSignOut={() => {
          session.clear();
          setMe(null);
        }}
      />
    </MeContext.Provider>
  );
}

function SignIn({ onSignedIn, expired }: { onSignedIn: (t: string, me: Me) => void; expired: boolean }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    setBusy(true);
    try {
      const who = await api<Me>("GET", "/me", undefined, { token: token.trim() });
      onSignedIn(token.trim(), who);
    } catch (err) {
      const e2 = toApiError(err);
      setError(e2.status === 401 ? new ApiError(401, e2.code, e2.message, "token") : e2);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main className="signin">
      <form onSubmit={submit} aria-labelledby="signin-title">
        <h1 id="signin-title">Portcullis</h1>
        <p className="muted">Sign in with an admin or developer token.</p>
        {expired ? <p role="status">Your session ended (the token is no longer valid). Sign in again.</p> : null}
        <Field
          label="API token"
          type="password"
          name="token"
          value={token}
          onChange={setToken}
          required
          autoComplete="current-password"
          error={error?.field === "token" ? error.message : undefined}
          hint={
            <>
              <code>portcullis up</code> prints the admin token on its first start; admins issue more with{" "}
              <code>portcullis admin tokens create</code>.
            </>
          }
        />
        <Alert error={error} shown={["token"]} />
        <button type="submit" className="primary" disabled={busy || !token.trim()}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        <p className="muted small-print">The token is kept in this tab's session storage only.</p>
      </form>
    </main>
  );
}

function Shell({ onSignOut }: { onSignOut: () => void }) {
  const me = useMe();
  const route = useRoute();
  const [menu, setMenu] = useState(false);
  const section = route[0] ?? "proxies";
  const nav: [string, string, boolean][] = [
    ["proxies", "Proxies", true],
    ["providers", "Providers", isAdmin(me)],
    ["policies", "Policy hub", true],
    ["applications", "Applications", true],
    ["gateways", "Gateways", true],
    ["usage", "Usage", true],
    ["audit", "Audit log", isAdmin(me)],
  ];
  useEffect(() => setMenu(false), [route.join("/")]);
  let page;
  switch (section) {
    case "providers":
      page = isAdmin(me) ? <Providers /> : <Forbidden />;
      break;
    case "policies":
      page = <Catalogue name={route[1]} />;
      break;
    case "gateways":
      page = <Gateways />;
      break;
    case "applications":
      page = route[1] ? <ApplicationPage id={route[1]} /> : <Applications />;
      break;
    case "usage":
      page = <Usage />;
      break;
    case "audit":
      page = isAdmin(me) ? <Audit /> : <Forbidden />;
      break;
    case "new-proxy":
      page = <NewProxy />;
      break;
    case "proxies":
      page = route[1] ? <ProxyPage id={route[1]} tab={route[2] ?? "overview"} /> : <Proxies />;
      break;
    default:
      page = <p>No such page. <a href="#/proxies">Go to proxies</a>.</p>;
  }
  return (
    <div className="shell">
      <a className="skip" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById("main")?.focus(); }}>
        Skip to content
      </a>
      <header className="top">
        <button type="button" className="menu-button" aria-expanded={menu} aria-controls="sidebar" onClick={() => setMenu(!menu)}>
          Menu
        </button>
        <span className="brand">Portcullis</span>
        <span className="who">
          {me.name} · {me.role}
          {me.team ? ` · team ${me.team}` : ""}
        </span>
        <button type="button" className="small" onClick={onSignOut}>
          Sign out
        </button>
      </header>
      <nav id="sidebar" className={"sidebar" + (menu ? " open" : "")} aria-label="Console">
        <div className="nav-group">LLM</div>
        {nav
          .filter(([, , shown]) => shown)
          .map(([slug, label]) => (
            <a key={slug} href={`#/${slug}`} aria-current={section === slug || (slug === "proxies" && section === "new-proxy") ? "page" : undefined}>
              {label}
            </a>
          ))}
      </nav>
      <main id="main" tabIndex={-1}>
        {page}
      </main>
    </div>
  );
}

function Forbidden() {
  return <p>This page needs an admin token.</p>;
}
