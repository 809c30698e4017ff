import { useState } from "react";
import { login, type Session } from "../api";
import { ErrorBanner } from "../common";

/** The token, posted once; the master answers with an HttpOnly session cookie. */
export function LoginView({ onLogin }: { onLogin: (s: Session) => void }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  return (
    <div className="login">
      <form data-testid="login-form" onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        try {
          onLogin(await login(token.trim()));
        } catch (err) {
          setError(err);
        } finally {
          setBusy(false);
        }
      }}>
        <h1>Titan</h1>
        <p>Log in with the cluster token (<code>cat ~/.titan/master/token</code>) or a viewer token,
          or open the one-time link <code>titan up</code> printed.</p>
        <input type="password" name="token" data-testid="login-token" autoFocus
          placeholder="token" value={token} onChange={(e) => setToken(e.target.value)} />
        <button type="submit" className="primary" data-testid="login-submit" disabled={busy || !token.trim()}>Log in</button>
        <ErrorBanner error={error} />
      </form>
    </div>
  );
}
