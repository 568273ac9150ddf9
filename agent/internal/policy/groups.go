package policy

import (
	"slices"
	"strings"
)

// LabelNetgroups is the Docker network or container label (and Mesos task
// label) that carries a comma-separated list of netgroups, for example
// "petrel.netgroups=frontend,public".
const LabelNetgroups = "petrel.netgroups"

// GroupPublic is the group every container may reach.
const GroupPublic = "public"

// GroupsFromLabels returns the netgroups named by the LabelNetgroups label,
// trimmed, without empties or duplicates, sorted. It returns nil when the
// label is absent or empty.
func GroupsFromLabels(labels map[string]string) []string {
	v, ok := labels[LabelNetgroups]
	if !ok {
		return nil
	}
	return NormalizeGroups(strings.Split(v, ","))
}

// NormalizeGroups trims the names, drops empty ones and duplicates, and sorts
// them. Names are case-sensitive, as in Calico.
func NormalizeGroups(groups []string) []string {
	var out []string
	for _, g := range groups {
		g = strings.TrimSpace(g)
		if g == "" {
			continue
		}
		out = append(out, g)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
