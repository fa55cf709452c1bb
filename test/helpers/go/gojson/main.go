// gojson decodes configuration objects the way a Go CNI plugin does (encoding/json into structs
// with the reference plugins' json tags: bridge, portmap, bandwidth; the dns capability as the
// conventions spell it; Podman's aliases) and prints each as the struct sees it, so that a test can
// compare tsnet's key matching (plugins/cni/go-json.ts) with Go's own.
//
//	gojson < cases.json     cases: a JSON list of strings, each one JSON document
//
// Output: a JSON list, per case {"decoded": <the struct, every field by its tag>} or {"error": "..."}.
package main

import (
	"encoding/json"
	"fmt"
	"os"
)

type portMapEntry struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP"`
}

type bandwidthEntry struct {
	IngressRate  uint64 `json:"ingressRate"`
	IngressBurst uint64 `json:"ingressBurst"`
	EgressRate   uint64 `json:"egressRate"`
	EgressBurst  uint64 `json:"egressBurst"`
}

type runtimeDNS struct {
	Nameservers []string `json:"servers"`
	Search      []string `json:"searches"`
	Options     []string `json:"options"`
}

type runtimeConfig struct {
	PortMaps  []portMapEntry      `json:"portMappings"`
	Bandwidth *bandwidthEntry     `json:"bandwidth"`
	DNS       runtimeDNS          `json:"dns"`
	IPs       []string            `json:"ips"`
	Mac       string              `json:"mac"`
	Aliases   map[string][]string `json:"aliases"`
}

type netConf struct {
	CNIVersion      string          `json:"cniVersion"`
	Name            string          `json:"name"`
	BrName          string          `json:"bridge"`
	IsGW            bool            `json:"isGateway"`
	IsDefaultGW     bool            `json:"isDefaultGateway"`
	IPMasq          bool            `json:"ipMasq"`
	MTU             int             `json:"mtu"`
	HairpinMode     bool            `json:"hairpinMode"`
	FirewallBackend string          `json:"firewallBackend"`
	Capabilities    map[string]bool `json:"capabilities"`
	RuntimeConfig   runtimeConfig   `json:"runtimeConfig"`
}

type outcome struct {
	Decoded *netConf `json:"decoded,omitempty"`
	Error   string   `json:"error,omitempty"`
}

func main() {
	var cases []string
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		fmt.Fprintln(os.Stderr, "gojson: cases on stdin:", err)
		os.Exit(1)
	}
	out := make([]outcome, 0, len(cases))
	for _, c := range cases {
		var n netConf
		if err := json.Unmarshal([]byte(c), &n); err != nil {
			out = append(out, outcome{Error: err.Error()})
			continue
		}
		out = append(out, outcome{Decoded: &n})
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "gojson:", err)
		os.Exit(1)
	}
}
