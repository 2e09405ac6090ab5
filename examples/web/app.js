// A minimal presence page on SIP.js (npm sip.js, an ES module: no build step): register over a
// WebSocket (RFC 7118), publish my status (PUBLISH, PIDF with RPID's on-the-phone), and keep a buddy
// list up to date from the NOTIFYs of one presence subscription per buddy (RFC 3856).
//
//   index.html?server=ws://127.0.0.1:8080&user=alice&domain=127.0.0.1&buddies=bob,carol
import { Publisher, Registerer, Subscriber, UserAgent } from "./node_modules/sip.js/lib/index.js";

const params = new URLSearchParams(location.search);
const server = params.get("server") || "ws://127.0.0.1:8080";
const user = params.get("user") || "alice";
const domain = params.get("domain") || "127.0.0.1";
const buddies = (params.get("buddies") || "bob").split(",").map((b) => b.trim()).filter(Boolean);
const aor = `sip:${user}@${domain}`;

const LABELS = { online: "online", "on-the-phone": "on the phone", offline: "offline" };

function pidf(entity, status) {
  // RFC 3863 PIDF; the activity in RFC 4480 RPID, the note for people reading it elsewhere.
  const basic = status === "offline" ? "closed" : "open";
  const activity = status === "on-the-phone" ? "<rpid:on-the-phone/>" : "<rpid:unknown/>";
  return `<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
          xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="${entity}">
  <tuple id="web"><status><basic>${basic}</basic></status><note>${LABELS[status]}</note></tuple>
  <dm:person id="me"><rpid:activities>${activity}</rpid:activities></dm:person>
</presence>`;
}

// What a NOTIFY body says: offline (no document, or every tuple closed), on-the-phone, or online.
export function statusOf(body) {
  if (!body || !body.trim()) return "offline";
  const doc = new DOMParser().parseFromString(body, "application/xml");
  if (doc.getElementsByTagName("parsererror").length) return "offline";
  const basics = [...doc.getElementsByTagNameNS("*", "basic")].map((b) => b.textContent.trim());
  if (!basics.includes("open")) return "offline";
  const phone = doc.getElementsByTagNameNS("urn:ietf:params:xml:ns:pidf:rpid", "on-the-phone").length > 0;
  const notes = [...doc.getElementsByTagNameNS("*", "note")].map((n) => n.textContent.toLowerCase());
  return phone || notes.some((n) => n.includes("on the phone")) ? "on-the-phone" : "online";
}

function show(buddy, status) {
  const item = document.getElementById(`buddy-${buddy}`);
  item.className = status;
  item.querySelector(".state").textContent = LABELS[status];
}

function addBuddy(buddy) {
  const item = document.createElement("li");
  item.id = `buddy-${buddy}`;
  item.innerHTML = `<span class="name"></span><span class="state"></span>`;
  item.querySelector(".name").textContent = buddy;
  document.getElementById("buddies").append(item);
  show(buddy, "offline");
}

async function main() {
  document.getElementById("me").textContent = aor;
  buddies.forEach(addBuddy);
  const ua = new UserAgent({
    uri: UserAgent.makeURI(aor),
    transportOptions: { server },
    logLevel: "warn",
  });
  await ua.start();

  const registerer = new Registerer(ua, { expires: 600 });
  registerer.stateChange.addListener((state) => {
    const line = document.getElementById("registration");
    line.textContent = state === "Registered" ? `registered over ${server}` : `not registered (${state})`;
    line.className = state === "Registered" ? "registered" : "";
  });
  await registerer.register();

  const publisher = new Publisher(ua, UserAgent.makeURI(aor), "presence", { expires: 600 });
  async function publish() {
    const status = document.getElementById("my-status").value;
    await publisher.publish(pidf(aor, status));
    document.getElementById("published").textContent = `published: ${LABELS[status]}`;
  }
  document.getElementById("publish").addEventListener("click", publish);
  await publish();

  for (const buddy of buddies) {
    const subscriber = new Subscriber(ua, UserAgent.makeURI(`sip:${buddy}@${domain}`), "presence",
                                      { expires: 600 });
    subscriber.delegate = {
      onNotify: (notification) => {
        notification.accept();
        show(buddy, statusOf(notification.request.body));
      },
    };
    await subscriber.subscribe();
  }
  window.presenceReady = true;   // for the end-to-end test
}

main().catch((error) => {
  document.getElementById("registration").textContent = `error: ${error}`;
  console.error(error);
});
