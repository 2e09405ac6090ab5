"""Regular expressions for the RFC 3261 grammar (section 25), each next to the ABNF it implements.

Like h11's _abnf.py: the pieces are strings so bigger rules are built from smaller ones, and only the
rules the parsers use are compiled at the bottom. Where we are more liberal than the ABNF (to accept
what real user agents send, as OpenSIPS does), the comment says so.
"""

from __future__ import annotations

import re

# alphanum  =  ALPHA / DIGIT
# token     =  1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
token = r"[A-Za-z0-9\-.!%*_+`'~]+"

# token-nodot  =  1*( alphanum / "-"  / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )   (RFC 6665)
token_nodot = r"[A-Za-z0-9\-!%*_+`'~]+"

# LWS  =  [*WSP CRLF] 1*WSP ; linear whitespace   (folding is undone before these run)
# SWS  =  [LWS] ; sep whitespace
SWS = r"[ \t]*"

# quoted-string  =  SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
# qdtext         =  LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
# quoted-pair    =  "\" (%x00-09 / %x0B-0C / %x0E-7F)
quoted_string = r'"(?:[^"\\\r\n]|\\[^\r\n])*"'

# hostname      =  *( domainlabel "." ) toplabel [ "." ]
# domainlabel   =  alphanum / alphanum *( alphanum / "-" ) alphanum
# IPv4address   =  1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT
# (liberal: any run of alphanum, "-", "." and "_" - "_" is common in SRV-style names; IPv4 fits too)
hostname = r"[A-Za-z0-9\-._]+"
# IPv6reference  =  "[" IPv6address "]"   (liberal: hex digits, ":" and "." for embedded IPv4)
ipv6reference = r"\[[0-9A-Fa-f:.]+\]"
# host  =  hostname / IPv4address / IPv6reference
host = rf"(?:{ipv6reference}|{hostname})"
# port  =  1*DIGIT   (bounded to 5 digits; the value is checked against 65535 by the parser)
port = r"[0-9]{1,5}"

# gen-value  =  token / host / quoted-string
# (liberal: an unquoted value may also hold "/", "@", "?", "&", "=" and "$", seen in real Via/Contact params)
gen_value_unquoted = r"[A-Za-z0-9\-.!%*_+`'~:\[\]/@?&=$]+"
gen_value = rf"(?:{quoted_string}|{gen_value_unquoted})"
# generic-param  =  token [ EQUAL gen-value ]      EQUAL = SWS "=" SWS;  SEMI = SWS ";" SWS
generic_param = rf"{SWS};{SWS}(?P<name>{token})(?:{SWS}={SWS}(?P<value>{gen_value}))?{SWS}"
# *( SEMI generic-param ) without quoted-strings, whole: written so that no two parts can match the same
# whitespace (no backtracking blow-up on long runs of spaces).
generic_params_unquoted = rf"{SWS}(?:;{SWS}{token}(?:{SWS}={SWS}{gen_value_unquoted})?{SWS})*"
# One generic-param of a list generic_params_unquoted has matched: (name, value), value "" for a flag.
param_pair = rf";{SWS}({token})(?:{SWS}={SWS}({gen_value_unquoted}))?"

# tag-param  =  "tag" EQUAL token                 (RFC 3261 25.1, in from-param / to-param)
# event-param = generic-param / ( "id" EQUAL token )   (RFC 6665 8.2.1)
# (liberal: the characters of an unquoted gen-value, as for every other parameter; never a quoted-string
# nor empty - a tag or event id is stored and written back as it is in the NOTIFY's From/To/Event)
param_token = gen_value_unquoted

# Characters no header line may hold. RFC 3261 25.1: a header value is made of TEXT-UTF8char
# (%x21-7E / UTF8-NONASCII), LWS and, inside a quoted-string, quoted-pairs; a control character (HTAB
# excepted) can only appear as a quoted-pair ("\" %x00-09 / %x0B-0C / %x0E-7F).
# (strict: refused even as a quoted-pair - no user agent sends one, and what a header holds is stored
# (Call-ID, tags, URIs) and written into XML bodies, which cannot carry control characters at all.
# CR and LF are not in the set: they end lines, and a CR that ends none is refused by the parser.)
control_char = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"

# Call-ID  =  ( "Call-ID" / "i" ) HCOLON callid
# callid   =  word [ "@" word ]
# word     =  1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" / "(" / ")" / "<" /
#               ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" )
# (liberal: any visible ASCII character (VCHAR), so also "=", "#", "$", "&", ",", ";", "^", "|" and a second
# "@", which user agents do put in Call-IDs (base64 padding, Linphone's "#" and "$"); OpenSIPS takes any
# Call-ID. What word keeps out and matters is kept out: control characters, white space, non-ASCII.)
callid = r"[\x21-\x7e]+"

# --- URIs (RFC 3261 19.1.1, 25.1) ----------------------------------------------------------------------
# unreserved  =  alphanum / mark        mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
# escaped     =  "%" HEXDIG HEXDIG
# user             =  1*( unreserved / escaped / user-unreserved )
# user-unreserved  =  "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
user = r"[A-Za-z0-9\-_.!~*'()%&=+$,;?/#]+"  # liberal: "#" (seen in feature codes)
# password  =  *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
password = r"[A-Za-z0-9\-_.!~*'()%&=+$,]*"
# paramchar        =  param-unreserved / unreserved / escaped
# param-unreserved =  "[" / "]" / "/" / ":" / "&" / "+" / "$"
paramchar = r"[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]"
# uri-parameter  =  ... / other-param        other-param = pname [ "=" pvalue ]
uri_parameter = rf"(?P<name>{paramchar}+)(?:=(?P<value>{paramchar}*))?"
# hnv-unreserved  =  "[" / "]" / "/" / "?" / ":" / "+" / "$"
# header = hname "=" hvalue      hname = 1*( hnv-unreserved / unreserved / escaped )
hnvchar = r"[A-Za-z0-9\-_.!~*'()%\[\]/?:+$]"
uri_header = rf"(?P<name>{hnvchar}+)=(?P<value>{hnvchar}*)"

# SIP-URI   =  "sip:" [ userinfo ] hostport uri-parameters [ headers ]
# SIPS-URI  =  "sips:" [ userinfo ] hostport uri-parameters [ headers ]
# userinfo  =  ( user / telephone-subscriber ) [ ":" password ] "@"
# hostport  =  host [ ":" port ]
# uri-parameters  =  *( ";" uri-parameter)
# headers   =  "?" header *( "&" header )
# (scheme compared case-insensitively, RFC 3261 19.1.4; `pres:` and `im:` (RFC 3859/3860) share the form)
sip_uri = (
    rf"(?P<scheme>[Ss][Ii][Pp][Ss]?|[Pp][Rr][Ee][Ss]|[Ii][Mm]):"
    rf"(?:(?P<user>{user})(?::(?P<password>{password}))?@)?"
    rf"(?P<host>{host})(?::(?P<port>{port}))?"
    rf"(?P<params>(?:;{paramchar}+(?:={paramchar}*)?)*)"
    rf"(?:\?(?P<headers>{hnvchar}+={hnvchar}*(?:&{hnvchar}+={hnvchar}*)*))?"
)
# telephone-uri  =  "tel:" telephone-subscriber             (RFC 3966)
# telephone-subscriber  =  global-number / local-number
# global-number-digits  =  "+" *phonedigit DIGIT *phonedigit
# local-number-digits   =  *phonedigit-hex (HEXDIG / "*" / "#") *phonedigit-hex
# phonedigit-hex        =  HEXDIG / "*" / "#" / visual-separator;  visual-separator = "-" / "." / "(" / ")"
tel_uri = (
    r"(?P<scheme>[Tt][Ee][Ll]):(?P<user>\+?[0-9A-Fa-f*#\-.()]+)"
    rf"(?P<params>(?:;{paramchar}+(?:={paramchar}*)?)*)"
)
# absoluteURI  =  scheme ":" ( hier-part / opaque-part );  scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
uri_scheme = r"(?P<scheme>[A-Za-z][A-Za-z0-9+\-.]*):"

# --- start lines (RFC 3261 7.1, 7.2) -------------------------------------------------------------------
# Request-Line  =  Method SP Request-URI SP SIP-Version CRLF
# SIP-Version   =  "SIP" "/" 1*DIGIT "." 1*DIGIT
request_line = rf"(?P<method>{token}) (?P<uri>[^ \t]+) (?P<version>[Ss][Ii][Pp]/[0-9]+\.[0-9]+)"
# Status-Line    =  SIP-Version SP Status-Code SP Reason-Phrase CRLF
# Status-Code    =  3DIGIT;   Reason-Phrase  =  *(reserved / unreserved / escaped / UTF8 / SP / HTAB)
# (liberal: the SP before an empty Reason-Phrase may be missing)
status_line = (
    r"(?P<version>[Ss][Ii][Pp]/[0-9]+\.[0-9]+) (?P<status>[1-6][0-9][0-9])(?: (?P<reason>[^\r\n]*))?"
)

# --- header values ---------------------------------------------------------------------------------------
# via-parm       =  sent-protocol LWS sent-by *( SEMI via-params )
# sent-protocol  =  protocol-name SLASH protocol-version SLASH transport      SLASH = SWS "/" SWS
# sent-by        =  host [ COLON port ]                                      COLON = SWS ":" SWS
via_parm = (
    rf"(?P<protocol>{token}{SWS}/{SWS}{token}{SWS}/{SWS}{token})[ \t]+"
    rf"(?P<host>{host})(?:{SWS}:{SWS}(?P<port>{port}))?{SWS}"
)
# CSeq  =  "CSeq" HCOLON 1*DIGIT LWS Method       (liberal: the digits are bounded to 10)
cseq = rf"(?P<number>[0-9]{{1,10}})[ \t]+(?P<method>{token})"
# delta-seconds  =  1*DIGIT     (Expires, Max-Forwards, Content-Length)
digits = r"[0-9]+"
# event-type  =  event-package *( "." event-template )
event_type = rf"{token_nodot}(?:\.{token_nodot})*"
# media-type  =  m-type SLASH m-subtype *(SEMI m-parameter)
media_type = rf"(?P<type>{token}){SWS}/{SWS}(?P<subtype>{token}){SWS}"
# display-name  =  *(token LWS)/ quoted-string
display_name_tokens = rf"{token}(?:[ \t]+{token})*"

TOKEN = re.compile(token)
TOKEN_NODOT = re.compile(token_nodot)
GENERIC_PARAM = re.compile(generic_param)
GENERIC_PARAMS_UNQUOTED = re.compile(generic_params_unquoted)
PARAM_PAIR = re.compile(param_pair)
QUOTED_STRING = re.compile(quoted_string)
SIP_URI = re.compile(sip_uri)
TEL_URI = re.compile(tel_uri)
URI_SCHEME = re.compile(uri_scheme)
URI_PARAMETER = re.compile(uri_parameter)
URI_HEADER = re.compile(uri_header)
REQUEST_LINE = re.compile(request_line)
STATUS_LINE = re.compile(status_line)
VIA_PARM = re.compile(via_parm)
CSEQ = re.compile(cseq)
DIGITS = re.compile(digits)
EVENT_TYPE = re.compile(event_type)
MEDIA_TYPE = re.compile(media_type)
DISPLAY_NAME_TOKENS = re.compile(display_name_tokens)
PARAM_TOKEN = re.compile(param_token)
CONTROL_CHAR = re.compile(control_char)
CALLID = re.compile(callid)
