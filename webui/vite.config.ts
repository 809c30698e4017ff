// Built by `make webui` into titan/web/static (package data the master serves at /).
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

declare const process: { env: Record<string, string | undefined> };

export default defineConfig({
  plugins: [react()],
  base: "/",
  build: {
    outDir: "../titan/web/static",
    emptyOutDir: true,
    assetsDir: "assets",
    chunkSizeWarningLimit: 1024,
    sourcemap: false,
  },
  server: {
    // No file watcher where nothing is edited (tests/unit/test_constructor_export.py runs the
    // model with vite-node: a watcher per run takes inotify instances, which run out).
    watch: process.env.TITAN_VITE_NO_WATCH ? null : {},
    // `npm run dev` next to a master started with --http tcp:8080:interface=127.0.0.1
    proxy: { "/api": "http://127.0.0.1:8080", "/login": "http://127.0.0.1:8080" },
  },
});
