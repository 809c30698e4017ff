// Built by `make webui` into titan/web/static (package data the master serves at /).
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

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
    // `npm run dev` next to a master started with --http tcp:8080:interface=127.0.0.1
    proxy: { "/api": "http://127.0.0.1:8080", "/login": "http://127.0.0.1:8080" },
  },
});
