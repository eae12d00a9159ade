import type { Metadata, Viewport } from "next";
import type { ReactNode } from "react";
import { ApiProvider } from "@/lib/trpc";
import "./globals.css";

export const metadata: Metadata = {
  title: "Tessera console",
  description: "Deploy Python and TypeScript handlers as autoscaled HTTP endpoints.",
};

export const viewport: Viewport = { width: "device-width", initialScale: 1 };

export default function RootLayout({ children }: { children: ReactNode }) {
  return (
    <html lang="en">
      <body>
        <ApiProvider>{children}</ApiProvider>
      </body>
    </html>
  );
}
