import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// Served by admin at `/`; `npm run dev` proxies the API to a local admin
// (PORTCULLIS_ADMIN, default http://127.0.0.1:8090) for work on the console.
export default defineConfig({
  plugins: [react()],
  base: "/",
  build: { assetsDir: "assets", sourcemap: false, chunkSizeWarningLimit: 2000 },
  server: {
    proxy: { "/api": process.env.PORTCULLIS_ADMIN ?? "http://127.0.0.1:8090" },
  },
});
